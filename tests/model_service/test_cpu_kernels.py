"""The C++ kernels (`model_service.cpu_kernels`) against NumPy in float64."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from model_service.cpu_kernels import (
    INT8_PATH_VARIABLE,
    INT8_PATHS,
    decode_attention,
    int8_matmul,
    int8_path,
    logit_stats,
)

# (rows, outputs, depth): odd sizes leave tails in every direction the kernel tiles
# (rows by four, outputs by eight, four, two and one, depth by 8 and, for bfloat16
# activations, by 32); 5000 x 640 is split between threads.
SHAPES = [
    (1, 8, 16),
    (3, 7, 13),
    (5, 33, 40),
    (1, 19, 128),
    (4, 5000, 640),
    (37, 70, 203),
    (32, 96, 2048),
]


def operands(rows: int, outputs: int, depth: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, depth), dtype=np.float32)
    values = rng.integers(-127, 128, (outputs, depth), dtype=np.int8)
    scale = rng.uniform(0.001, 0.01, outputs).astype(np.float32)
    return x, values, scale


# The activations as the kernel takes them: float32, or rounded to bfloat16.
ACTIVATIONS = {"float32": False, "bfloat16": True}


@pytest.mark.parametrize("activations", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_it_multiplies_by_the_scaled_int8_weight(shape, activations) -> None:
    x, values, scale = operands(*shape)
    bfloat16 = ACTIVATIONS[activations]

    y = np.asarray(
        jax.jit(int8_matmul, static_argnames="bfloat16")(
            x, values, scale, bfloat16=bfloat16
        )
    )

    taken = x.astype(ml_dtypes.bfloat16) if bfloat16 else x
    expected = (taken.astype(np.float64) @ values.T.astype(np.float64)) * scale
    assert y.shape == expected.shape and y.dtype == np.float32
    np.testing.assert_allclose(
        y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
    )


@pytest.mark.parametrize("activations", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_each_row_comes_out_as_it_does_alone(shape, activations) -> None:
    """Bit for bit: a request's tokens must not depend on the rows beside it."""
    x, values, scale = operands(*shape, seed=1)
    bfloat16 = ACTIVATIONS[activations]

    together = np.asarray(int8_matmul(x, values, scale, bfloat16=bfloat16))

    for row in range(x.shape[0]):
        alone = np.asarray(
            int8_matmul(x[row : row + 1], values, scale, bfloat16=bfloat16)
        )
        np.testing.assert_array_equal(together[row : row + 1], alone)


def test_it_takes_the_fastest_path_this_cpu_runs() -> None:
    assert int8_path() in INT8_PATHS


@pytest.mark.parametrize("activations", ACTIVATIONS)
def test_every_path_this_cpu_runs_gives_the_same_bits(monkeypatch, activations) -> None:
    """Hosts differ (AVX-512 here, AVX2 on many), tokens must not: each path this
    CPU runs, forced by the environment, on every shape."""
    bfloat16 = ACTIVATIONS[activations]
    results = {}
    for path in INT8_PATHS:
        monkeypatch.setenv(INT8_PATH_VARIABLE, path)
        if int8_path() == path:
            results[path] = []
            for shape in SHAPES:
                y = int8_matmul(*operands(*shape, seed=2), bfloat16=bfloat16)
                results[path].append(np.asarray(y))

    first, *others = results.values()  # the build's own path at least
    for other in others:
        for a, b in zip(first, other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_bfloat16_products_flush_denormals_on_every_path(monkeypatch) -> None:
    """AVX512_BF16's instruction takes denormal inputs as zero and flushes denormal
    sums to zero; the other paths' FMAs must too (XLA's threads set FTZ and DAZ), or
    the paths would differ: a denormal activation, and 2^-120 - 2^-120 * 127/128 =
    2^-127, a denormal sum of two normal products."""
    x = np.zeros((2, 32), np.float32)
    x[0, 0] = 1e-39
    x[1, :2] = -(2.0**-120) * 127 / 128, 2.0**-120  # lane 0 adds k = 1, then k = 0
    values, scale = np.ones((8, 32), np.int8), np.ones(8, np.float32)

    for path in INT8_PATHS:
        monkeypatch.setenv(INT8_PATH_VARIABLE, path)
        if int8_path() == path:
            y = int8_matmul(x, values, scale, bfloat16=True)
            np.testing.assert_array_equal(y, np.zeros((2, 8), np.float32))


def test_it_refuses_a_path_this_cpu_does_not_run(monkeypatch) -> None:
    monkeypatch.setenv(INT8_PATH_VARIABLE, "sse1")

    assert int8_path() is None
    with pytest.raises(Exception, match=INT8_PATH_VARIABLE):
        jax.block_until_ready(int8_matmul(*operands(1, 8, 16)))


def test_it_refuses_operands_that_do_not_fit() -> None:
    x, values, scale = operands(2, 8, 16)

    match = "x \\[R, K\\], w \\[L, M, K\\], scale \\[L, M\\]"
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(int8_matmul(x[:, :8], values, scale))
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(int8_matmul(x, values, jnp.ones(7)))


@pytest.mark.parametrize("activations", ACTIVATIONS)
def test_it_reads_a_layer_of_a_stack_as_that_weight_alone(activations) -> None:
    """A model scanned over its layers hands the whole stack and a traced index."""
    bfloat16 = ACTIVATIONS[activations]
    x, _, _ = operands(3, 40, 72, seed=3)
    stack = [operands(3, 40, 72, seed=4 + layer)[1:] for layer in range(3)]
    values = np.stack([v for v, _ in stack])  # [3, 40, 72]
    scales = np.stack([s for _, s in stack])  # [3, 40]
    product = jax.jit(int8_matmul, static_argnames="bfloat16")

    for layer, (v, s) in enumerate(stack):
        from_stack = product(x, values, scales, layer, bfloat16=bfloat16)
        np.testing.assert_array_equal(from_stack, product(x, v, s, bfloat16=bfloat16))
    with pytest.raises(Exception, match="the layer is outside the stack"):
        jax.block_until_ready(product(x, values, scales, 3, bfloat16=bfloat16))


# (rows, vocab): the kernel cuts rows in stretches of 16384 values and each stretch in
# lanes of eight: tails of both, one stretch and many, shared between threads.
LOGIT_SHAPES = [(1, 5), (3, 16384), (2, 16384 * 3 + 13), (8, 262144)]


def logits(rows: int, vocab: int, seed: int = 0) -> np.ndarray:
    return 4 * np.random.default_rng(seed).standard_normal((rows, vocab), np.float32)


@pytest.mark.parametrize("shape", LOGIT_SHAPES)
def test_logit_stats_are_argmax_and_logsumexp(shape) -> None:
    x = logits(*shape)

    best, logsumexp = jax.jit(logit_stats)(x)

    np.testing.assert_array_equal(best, x.argmax(axis=1))
    x64 = x.astype(np.float64)
    top = x64.max(axis=1, keepdims=True)
    expected = top[:, 0] + np.log(np.exp(x64 - top).sum(axis=1))
    np.testing.assert_allclose(logsumexp, expected, rtol=1e-6)  # float32 sums


def test_logit_stats_take_the_first_of_equal_largest_logits() -> None:
    x = logits(1, 16384 * 3)
    x[0, [20000, 40000, 16384 * 3 - 1]] = 50.0  # in the second and third stretches

    best, _ = logit_stats(x)

    assert int(best[0]) == 20000


def test_logit_stats_of_each_row_come_out_as_alone() -> None:
    x = logits(8, 16384 * 2 + 3, seed=1)

    best, logsumexp = logit_stats(x)

    for row in range(x.shape[0]):
        alone = logit_stats(x[row : row + 1])
        assert int(alone[0][0]) == int(best[row])
        assert np.float32(alone[1][0]).tobytes() == np.float32(logsumexp[row]).tobytes()


def test_logit_stats_refuse_an_empty_vocabulary() -> None:
    with pytest.raises(Exception, match="logits \\[R, V\\], V > 0"):
        jax.block_until_ready(logit_stats(np.zeros((2, 0), np.float32)))


def attention_reference(
    q, k_new, v_new, keys, values, key_positions, positions, window, cap
):
    """NumPy float64: softmax over the visible cached keys and the own key."""
    q, k_new, v_new = (a.astype(np.float64) for a in (q, k_new, v_new))
    out = np.zeros(q.shape)
    for b, t in enumerate(positions):
        if t < 0:
            continue
        p = key_positions[b]
        visible = (p >= 0) & (p <= t) & ((t - p < window) if window else True)
        for h in range(q.shape[1]):
            k = np.concatenate([keys[b, visible, h], k_new[b, h][None]])
            v = np.concatenate([values[b, h][:, visible].T, v_new[b, h][None]])
            logits = q[b, h] @ k.T  # [G, visible + 1]
            if cap:
                logits = np.tanh(logits / cap) * cap
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            out[b, h] = (weights / weights.sum(axis=1, keepdims=True)) @ v
    return out


@pytest.mark.parametrize("cache_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("slots", [19, 1100])  # one part of 512 slots, and three
@pytest.mark.parametrize("window, cap", [(0, 0.0), (5, 0.0), (0, 4.0)])
def test_decode_attention_attends_to_the_visible_keys_and_its_own(
    window, cap, slots, cache_dtype
) -> None:
    # 4 rows, 2 kv heads of 2 queries, head size 12 (a tail after the lanes).
    rng = np.random.default_rng(2)
    batch, heads, groups, size = 4, 2, 2, 12
    q = rng.standard_normal((batch, heads, groups, size), np.float32)
    k_new = rng.standard_normal((batch, heads, size), np.float32)
    v_new = rng.standard_normal((batch, heads, size), np.float32)
    # The cache as the worker keeps it on a CPU (float16) or in float32.
    keys = rng.standard_normal((batch, slots, heads, size)).astype(cache_dtype)
    values = rng.standard_normal((batch, heads, size, slots)).astype(cache_dtype)
    key_positions = np.full((batch, slots), -1, np.int32)
    key_positions[0, :9] = np.arange(9)  # row 0 at position 9 over 9 stored keys
    key_positions[1, 2:14] = np.arange(2, 14)  # row 1 at 20; 14..19 were never stored
    key_positions[1, 6] = -1  # (a hole inside the stretch)
    key_positions[3, : slots - 7] = np.arange(slots - 7)  # row 3: all but 7 slots
    positions = np.array([9, 20, -1, slots - 7], np.int32)  # row 2 is free

    out = jax.jit(decode_attention, static_argnames=("window", "soft_cap"))(
        q, k_new, v_new, keys, values, key_positions, positions, window=window,
        soft_cap=cap,
    )  # fmt: skip

    expected = attention_reference(
        q, k_new, v_new, keys, values, key_positions, positions, window, cap
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "keys_dtype, values_dtype", [(np.float16, np.float32), (np.int8, np.int8)]
)
def test_decode_attention_refuses_a_cache_of_mixed_or_other_types(
    keys_dtype, values_dtype
) -> None:
    q = np.zeros((1, 1, 1, 8), np.float32)
    new = np.zeros((1, 1, 8), np.float32)
    keys = np.zeros((1, 3, 1, 8), keys_dtype)
    values = np.zeros((1, 1, 8, 3), values_dtype)
    positions = np.zeros((1, 3), np.int32)

    with pytest.raises(Exception, match="of one type \\(float32 or float16\\)"):
        jax.block_until_ready(
            decode_attention(
                q,
                new,
                new,
                keys,
                values,
                positions,
                np.array([3], np.int32),
                window=0,
                soft_cap=0.0,
            )
        )


def test_decode_attention_reads_a_layer_of_a_stacked_cache_as_that_layer_alone() -> (
    None
):
    """The cache stacks the layers of one type; a scan hands it whole with an index."""
    rng = np.random.default_rng(5)
    layers, batch, heads, groups, size, slots = 3, 2, 2, 2, 8, 30
    q = rng.standard_normal((batch, heads, groups, size), np.float32)
    new = rng.standard_normal((batch, heads, size), np.float32)
    keys = rng.standard_normal((layers, batch, slots, heads, size)).astype(np.float16)
    values = rng.standard_normal((layers, batch, heads, size, slots)).astype(np.float16)
    key_positions = np.tile(np.arange(slots, dtype=np.int32), (batch, 1))
    positions = np.array([slots, 12], np.int32)

    def attend(keys, values, layer=0):
        return decode_attention(
            q, new, new, keys, values, key_positions, positions, layer=layer,
            window=0, soft_cap=0.0,
        )  # fmt: skip

    for layer in range(layers):
        from_stack = jax.jit(attend)(keys, values, layer)
        np.testing.assert_array_equal(from_stack, attend(keys[layer], values[layer]))
    with pytest.raises(Exception, match="the layer is outside the stack"):
        jax.block_until_ready(attend(keys, values, -1))
