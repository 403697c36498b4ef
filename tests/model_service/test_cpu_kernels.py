"""The C++ int8 product (`model_service.cpu_kernels`) against NumPy in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_service.cpu_kernels import int8_matmul

# (rows, outputs, depth): odd sizes leave tails in every direction the kernel tiles
# (rows by four, outputs by eight and two, depth by eight); 5000 x 640 is split
# between threads.
SHAPES = [(1, 8, 16), (3, 7, 13), (5, 33, 40), (4, 5000, 640), (32, 96, 2048)]


def operands(rows: int, outputs: int, depth: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, depth), dtype=np.float32)
    values = rng.integers(-127, 128, (outputs, depth), dtype=np.int8)
    scale = rng.uniform(0.001, 0.01, outputs).astype(np.float32)
    return x, values, scale


@pytest.mark.parametrize("shape", SHAPES)
def test_it_multiplies_by_the_scaled_int8_weight(shape) -> None:
    x, values, scale = operands(*shape)

    y = np.asarray(jax.jit(int8_matmul)(x, values, scale))

    expected = (x.astype(np.float64) @ values.T.astype(np.float64)) * scale
    assert y.shape == expected.shape and y.dtype == np.float32
    np.testing.assert_allclose(
        y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_each_row_comes_out_as_it_does_alone(shape) -> None:
    """Bit for bit: a request's tokens must not depend on the rows beside it."""
    x, values, scale = operands(*shape, seed=1)

    together = np.asarray(int8_matmul(x, values, scale))

    for row in range(x.shape[0]):
        alone = np.asarray(int8_matmul(x[row : row + 1], values, scale))
        np.testing.assert_array_equal(together[row : row + 1], alone)


def test_it_refuses_operands_that_do_not_fit() -> None:
    x, values, scale = operands(2, 8, 16)

    with pytest.raises(Exception, match="x \\[R, K\\], w \\[M, K\\] and scale \\[M\\]"):
        jax.block_until_ready(int8_matmul(x[:, :8], values, scale))
    with pytest.raises(Exception, match="scale \\[M\\]"):
        jax.block_until_ready(int8_matmul(x, values, jnp.ones(7)))
