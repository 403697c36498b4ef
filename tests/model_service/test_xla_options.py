"""The XLA flags that serving entry points put in the environment."""

from model_service.xla_options import SERVING_FLAGS, use_serving_flags


def test_it_adds_the_serving_flags_to_an_empty_environment() -> None:
    env: dict[str, str] = {}

    use_serving_flags(env)

    flags = env["XLA_FLAGS"].split()
    assert sorted(flags) == sorted(f"--{k}={v}" for k, v in SERVING_FLAGS.items())


def test_it_keeps_flags_already_set_and_does_not_override_them() -> None:
    env = {"XLA_FLAGS": "--xla_cpu_use_xnnpack=false --xla_dump_to=/tmp/x"}

    use_serving_flags(env)

    flags = env["XLA_FLAGS"].split()
    assert flags[:2] == ["--xla_cpu_use_xnnpack=false", "--xla_dump_to=/tmp/x"]
    assert "--xla_cpu_use_xnnpack=true" not in flags
    assert "--xla_cpu_copy_insertion_use_region_analysis=true" in flags
