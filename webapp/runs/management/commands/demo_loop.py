"""`manage.py demo_loop --model NAME --json`: the whole loop, unattended.

Needs the system running (`make run`, or workers of each kind against the same
database and Redis): a generation worker with `--catalog`, a Celery worker on the
generation queue, a training worker. With simulated raters of a known taste standing
in for people:

1. (with `--sft-steps`) SFT of NAME on the project's instruction set, registered:
   that is the initial policy, as in the report;
2. a campaign of the initial policy against itself (two samples a prompt) on the
   first `--prompts` prompts of the built-in sets (instruction-following's 210, then
   basic-safety's 114), its answers
   made by the generation worker;
3. the simulated raters rate it through the queue;
4. a reward model trained on its preference export (training worker), registered;
5. REINFORCE with a KL term from the initial policy with that reward model, on the
   prompts not held out; the policy registered, and served by name;
6. an evaluation campaign of the policy against the initial policy on the held-out
   prompts, rated again by the simulated raters; its Table-5 win rate, as its
   dashboard shows it (the simulated raters' row, every category).

The last line is a JSON object: `rm_eval_accuracy`, `policy_win_rate`, `ci_low`,
`ci_high`, `kl` (the policy's KL from the initial policy per answer, held out),
`target_kl`, and the names of what it made.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from webapp.core import serving
from webapp.evals import reports
from webapp.ratings.models import Answer, Campaign, Prompt, Rating
from webapp.ratings.services import copy_prompts, create_campaign
from webapp.ratings.simulated import SimulatedRater, parse_taste
from webapp.runs import loop, services
from webapp.runs.models import Run

POLL_S = 1.0


class Command(BaseCommand):
    help = "Runs ratings -> reward model -> RLHF -> served -> rated again, unattended."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--model", required=True, help="the starting model")
        # The defaults suit tiny-random; the README gives gemma3-270m's.
        parser.add_argument("--sft-steps", type=int, default=0)
        parser.add_argument("--sft-learning-rate", type=float, default=1e-2)
        parser.add_argument("--prompts", type=int, default=80)
        parser.add_argument("--raters", type=int, default=3)
        parser.add_argument("--taste", default="ends-turn")
        parser.add_argument("--max-new-tokens", type=int, default=32)
        parser.add_argument("--rm-steps", type=int, default=80)
        parser.add_argument("--rl-steps", type=int, default=30)
        parser.add_argument("--rl-prompts-per-step", type=int, default=4)
        parser.add_argument("--beta", type=float, default=0.05)
        parser.add_argument("--target-kl", type=float, default=6.0)
        parser.add_argument("--rm-learning-rate", type=float, default=1e-3)
        parser.add_argument("--rl-learning-rate", type=float, default=3e-3)
        parser.add_argument("--max-length", type=int, default=96)
        parser.add_argument("--timeout", type=float, default=3600, help="seconds")
        parser.add_argument("--json", action="store_true")

    def handle(self, **options: Any) -> None:
        try:
            parse_taste(options["taste"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.options = options
        self.deadline = time.monotonic() + options["timeout"]
        self.stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        started = time.monotonic()
        result = self.loop()
        result["seconds"] = round(time.monotonic() - started, 1)
        if not options["json"]:
            for key, value in result.items():
                self.stdout.write(f"{key}: {value}")
        self.stdout.write(json.dumps(result))

    # The steps -------------------------------------------------------------------

    def loop(self) -> dict[str, Any]:
        o = self.options
        initial = o["model"]
        if o["sft_steps"]:
            initial = self.sft(initial)
        campaign = self.campaign(initial)
        self.rate(campaign)
        reward_run = self.wait_run(
            loop.train_reward_model(
                campaign, f"demo-rm-{self.stamp}", self.reward_model_settings()
            )
        )
        services.register(reward_run, f"demo-rm-{self.stamp}")
        policy_run = self.wait_run(
            loop.run_rlhf(
                campaign, reward_run, f"demo-rlhf-{self.stamp}", self.rlhf_settings()
            )
        )
        policy = services.register(policy_run, f"demo-policy-{self.stamp}")
        self.wait_served(policy.name)
        evaluation = self.wait_open(
            loop.evaluate(campaign, policy, f"demo-evaluation-{self.stamp}")
        )
        self.rate(evaluation)
        table = self.win_rate(evaluation)
        return {
            "rm_eval_accuracy": reward_run.final.get("eval_accuracy"),
            "policy_win_rate": table.win_rate,
            "ci_low": table.ci_low,
            "ci_high": table.ci_high,
            "kl": policy_run.final.get("eval_kl"),
            "target_kl": o["target_kl"],
            "n_ratings": table.n_ratings,
            "initial_policy": initial,
            "campaign": campaign.name,
            "reward_model": f"demo-rm-{self.stamp}",
            "policy": policy.name,
            "evaluation": evaluation.name,
        }

    def sft(self, model: str) -> str:
        self.say(f"SFT of {model} on the project's instruction set")
        run = self.wait_run(
            services.start_run(
                Run.Kind.SFT,
                f"demo-sft-{self.stamp}",
                {
                    "model": services.model_path(model),
                    "steps": self.options["sft_steps"],
                    "batch_size": 8,
                    "learning_rate": self.options["sft_learning_rate"],
                    "max_length": self.options["max_length"],
                    "eval_every": self.options["sft_steps"],
                    "checkpoint_every": self.options["sft_steps"],
                },
                services.instruction_set_data,
                data_source="the project's instruction set",
            )
        )
        name = f"demo-sft-{self.stamp}"
        services.register(run, name)
        self.wait_served(name)
        return name

    def campaign(self, model: str) -> Campaign:
        # Every built-in set's prompts, in the order the migration loads them: more
        # prompts than one set holds make a larger held-out share, on which the
        # reward model's accuracy is measured.
        prompts = list(
            Prompt.objects.filter(prompt_set__builtin=True).order_by(
                "prompt_set_id", "id"
            )[: self.options["prompts"]]
        )
        prompt_set = copy_prompts(
            prompts,
            f"demo-{self.stamp} prompts",
            "The first prompts of the built-in sets, for a demo.",
        )
        self.say(f"campaign of {model} against itself on {prompt_set.name}")
        return self.wait_open(
            create_campaign(
                {
                    "name": f"demo-{self.stamp}",
                    "prompt_set": prompt_set,
                    "model": model,
                    "baseline": model,
                    "ratings_per_item": self.options["raters"],
                    "temperature": 1.0,
                    "top_p": 1.0,
                    "max_new_tokens": self.options["max_new_tokens"],
                    "seed": 0,
                    "gold_rate": 0,
                    "repeat_rate": 0,
                    # Each rater may rate every item (the default cap of 200 a day
                    # left part of a larger campaign unrated).
                    "daily_cap": len(prompts),
                }
            )
        )

    def rate(self, campaign: Campaign) -> None:
        for index in range(self.options["raters"]):
            rater = SimulatedRater(f"demo-{index}", self.options["taste"], index)
            rater.rate(campaign)
        count = Rating.objects.filter(item__campaign=campaign).count()
        self.say(f"{campaign.name}: {count} ratings")

    def reward_model_settings(self) -> dict[str, Any]:
        steps = self.options["rm_steps"]
        return {
            "steps": steps,
            "batch_size": 16,
            "learning_rate": self.options["rm_learning_rate"],
            "max_length": self.options["max_length"],
            "eval_fraction": 0.2,
            "eval_every": steps,
            "checkpoint_every": steps,
            "ties": "drop",
        }

    def rlhf_settings(self) -> dict[str, Any]:
        steps = self.options["rl_steps"]
        return {
            "steps": steps,
            "prompts_per_step": self.options["rl_prompts_per_step"],
            "k": 4,
            "learning_rate": self.options["rl_learning_rate"],
            "max_length": self.options["max_length"],
            "max_new_tokens": self.options["max_new_tokens"],
            "temperature": 1.0,
            "beta": self.options["beta"],
            "target_kl": self.options["target_kl"],
            "eval_fraction": 0.2,
            "eval_every": steps,
            "checkpoint_every": steps,
        }

    def win_rate(self, evaluation: Campaign):
        """The evaluation's dashboard row: its simulated raters, every category."""
        group = reports.campaign_report(evaluation).group("simulated")
        cell = next(c for c in group.win_rates if c.slice == "all")
        return cell.rate

    # Waiting ---------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.stderr.write(f"[demo_loop] {text}")

    def wait(self, ready, what: str):
        while not (value := ready()):
            if time.monotonic() > self.deadline:
                raise CommandError(f"timed out waiting for {what}")
            time.sleep(POLL_S)
        return value

    def wait_run(self, run: Run) -> Run:
        self.say(f"run {run.name} ({run.kind}) queued")

        def ended():
            fresh = Run.objects.get(pk=run.pk)
            if fresh.status in (Run.Status.FAILED, Run.Status.STOPPED):
                raise CommandError(f"run {run.name} {fresh.status}: {fresh.error}")
            return fresh if fresh.status == Run.Status.FINISHED else None

        finished = self.wait(ended, f"run {run.name}")
        self.say(f"run {run.name} finished: {finished.final}")
        return finished

    def wait_open(self, campaign: Campaign) -> Campaign:
        self.say(f"campaign {campaign.name}: answers being made")

        def opened():
            fresh = Campaign.objects.get(pk=campaign.pk)
            failed = fresh.answers.filter(status=Answer.Status.FAILED).first()
            if failed and not fresh.answers.filter(status=Answer.Status.PENDING):
                raise CommandError(f"{campaign.name}: an answer failed: {failed.error}")
            return fresh if fresh.status == Campaign.Status.OPEN else None

        return self.wait(opened, f"the answers of {campaign.name}")

    def wait_served(self, name: str) -> None:
        self.say(f"waiting for a generation worker to serve {name}")
        self.wait(
            lambda: name in serving.available_models(), f"a worker serving {name}"
        )
