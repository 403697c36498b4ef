"""The Celery app: configured from Django settings (the CELERY_* names).

Start a worker with `celery -A webapp worker -Q default,generation` (add `training` on
hosts with an accelerator).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("webapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Django apps' tasks.py, plus training/tasks.py, which is not a Django app.
app.autodiscover_tasks()
app.autodiscover_tasks(["training"])
