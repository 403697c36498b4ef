"""The layering rule of the design: `model_service/` and `training/` never import
Django, so they run on accelerator hosts and in scripts without the web app. The one
exception is `training.tasks`, the package's Celery edge (Celery itself loads Django
when a task is declared). The other way, the web app never imports JAX: its
processes and every `manage.py` command would pay a second for it at start."""

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules_of(package: str) -> list[str]:
    found = [package]
    for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
        if not info.name.endswith("__main__"):
            found.append(info.name)
    return found


def _imports_django(modules: list[str]) -> bool:
    return _loads_django(
        f"import importlib\nfor name in {modules!r}: importlib.import_module(name)\n"
    )


def _file_imports_django(path: str) -> bool:
    """Whether one file imports Django, loaded alone: importing it through its
    package would run the package's `__init__`, and `webapp`'s starts Celery."""
    return _loads_django(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('alone', {path!r})\n"
        "module = sys.modules['alone'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
    )


def _loads_django(code: str) -> bool:
    return _loads("django", code)


def _loads(package: str, code: str) -> bool:
    """Whether running `code` in a fresh interpreter imports `package`."""
    code = f"import sys\n{code}print({package!r} in sys.modules)\n"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1] == "True"


def test_model_service_never_imports_django():
    modules = _modules_of("model_service")
    assert len(modules) > 5
    assert not _imports_django(modules)


CELERY_EDGE = "training.tasks"


def test_training_never_imports_django():
    modules = _modules_of("training")
    assert CELERY_EDGE in modules
    assert not _imports_django([m for m in modules if m != CELERY_EDGE])


def test_the_check_sees_a_django_import():
    assert _imports_django(["webapp.settings"])


def test_the_dashboard_statistics_never_import_django():
    assert not _file_imports_django("webapp/evals/stats.py")


def test_the_file_check_sees_a_django_import():
    assert _file_imports_django("webapp/settings.py")


# The web process's application and every view, consumer and answer job it reaches.
WEB_APP = (
    "import django, os\n"
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'webapp.settings')\n"
    "django.setup()\n"
    "import webapp.asgi, webapp.urls, webapp.ratings.answer_jobs\n"
)


def test_the_web_app_never_imports_jax():
    assert not _loads("jax", WEB_APP)


def test_the_check_sees_a_jax_import():
    assert _loads("jax", WEB_APP + "import model_service.next_tokens\n")
