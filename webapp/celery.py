"""The Celery app: configured from Django settings (the CELERY_* names).

Start a worker with `celery -A webapp worker -Q default,generation` (add `training` on
hosts with an accelerator).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("webapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
# The tasks.py of every Django app. (training/tasks.py, not a Django app, is to be
# added here as `app.autodiscover_tasks(["training"])` once that package exists.)
app.autodiscover_tasks()
