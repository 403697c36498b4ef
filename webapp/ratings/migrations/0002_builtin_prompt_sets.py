"""The two prompt sets the project writes itself, mirroring the Gemma report's human
evaluations: instruction following and basic safety (`webapp/ratings/data/`)."""

from pathlib import Path

from django.db import migrations

from webapp.ratings.prompt_files import read_prompts

DATA = Path(__file__).resolve().parents[1] / "data"
BUILTIN = {
    "instruction-following": (
        "instruction_following.jsonl",
        "Creative writing, coding, and instructions with checkable constraints.",
    ),
    "basic-safety": (
        "basic_safety.jsonl",
        "Requests a good assistant declines or answers with care.",
    ),
}


def load(apps, schema_editor):
    PromptSet = apps.get_model("ratings", "PromptSet")
    Prompt = apps.get_model("ratings", "Prompt")
    for name, (filename, description) in BUILTIN.items():
        prompt_set, created = PromptSet.objects.get_or_create(
            name=name, defaults={"description": description, "builtin": True}
        )
        if not created:
            continue
        with (DATA / filename).open("rb") as stream:
            rows = read_prompts(stream, filename)
        Prompt.objects.bulk_create(
            Prompt(
                prompt_set=prompt_set,
                external_id=row.external_id,
                text=row.text,
                category=row.category,
                reference=row.reference,
                tags=row.tags,
            )
            for row in rows
        )


def unload(apps, schema_editor):
    apps.get_model("ratings", "PromptSet").objects.filter(
        name__in=BUILTIN, builtin=True
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("ratings", "0001_initial")]
    operations = [migrations.RunPython(load, unload)]
