//! The training kernels' bindings (crate::kernels): float32 arrays, or bfloat16 ones as their
//! uint16 bits (NumPy has no bfloat16), of any shape, C-contiguous, written in place.

use numpy::{PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// Run `$body` with `$t` the element type of the dropout kernels' array `$a` (named `$arg` in
/// errors): `u16` for bfloat16 bits, `f32` for float32.
macro_rules! with_float_type {
    ($a:expr, $arg:expr, $t:ident => $body:block) => {
        if float_kind($a, $arg)? {
            type $t = u16;
            $body
        } else {
            type $t = f32;
            $body
        }
    };
}

/// Fill ``out`` (any shape, C-contiguous, writable) with an inverted-dropout mask: 0 where an
/// element is dropped (probability ``p``, rounded to 1/65536), else ``1 / (1 - p)``. ``out`` is
/// float32, or uint16 holding bfloat16 bit patterns (NumPy has no bfloat16; pass
/// ``torch_bf16_tensor.view(torch.uint16).numpy()``). The mask depends only on ``seed`` and the
/// element index: both types drop the same elements.
#[pyfunction]
#[pyo3(signature = (out, *, p, seed))]
fn dropout_mask(py: Python<'_>, out: &Bound<'_, PyAny>, p: f64, seed: u64) -> PyResult<()> {
    with_float_type!(out, "out", T => {
        let mut out = writable::<T>(out, "out", None)?;
        let out = out.as_slice_mut().unwrap_or(&mut []);
        py.detach(|| crate::kernels::dropout::dropout_mask(out, p, seed))?;
    });
    Ok(())
}

/// ``out = gelu(x) * mask`` in one pass that never stores the mask: torch's exact GELU
/// (``nn.GELU()``; in float32 within 3e-7 * (1 + |x|) of the exact value) and an inverted dropout
/// with ``dropout_mask(p=p, seed=seed)``'s mask. ``x`` and ``out``: the same shape and dtype
/// (float32, or uint16 bfloat16 bits as in ``dropout_mask``), C-contiguous; ``out`` writable and
/// not ``x``. ``p=0`` is GELU alone.
#[pyfunction]
#[pyo3(signature = (x, out, *, p, seed))]
fn gelu_dropout(py: Python<'_>, x: &Bound<'_, PyAny>, out: &Bound<'_, PyAny>, p: f64, seed: u64) -> PyResult<()> {
    with_float_type!(x, "x", T => {
        let x = x.cast::<numpy::PyArrayDyn<T>>()?.readonly();
        let mut out = writable::<T>(out, "out", Some(x.shape()))?;
        let (x, out) = (x.as_slice().unwrap_or(&[]), out.as_slice_mut().unwrap_or(&mut []));
        py.detach(|| crate::kernels::gelu::gelu_dropout(x, out, p, seed))?;
    });
    Ok(())
}

/// The gradient of ``gelu_dropout(x, out, p=p, seed=seed)``: writes ``grad_out * mask *
/// gelu'(x)`` into ``grad_x``, the mask recomputed from the seed. ``grad_out`` and ``grad_x``: the
/// same shape and dtype as ``x``; ``grad_x`` writable and not an input.
#[pyfunction]
#[pyo3(signature = (x, grad_out, grad_x, *, p, seed))]
fn gelu_dropout_backward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    grad_out: &Bound<'_, PyAny>,
    grad_x: &Bound<'_, PyAny>,
    p: f64,
    seed: u64,
) -> PyResult<()> {
    with_float_type!(x, "x", T => {
        let x = x.cast::<numpy::PyArrayDyn<T>>()?.readonly();
        let grad_out = same_as::<T>(grad_out, "grad_out", x.shape())?.readonly();
        let mut grad_x = writable::<T>(grad_x, "grad_x", Some(x.shape()))?;
        let (x, g) = (x.as_slice().unwrap_or(&[]), grad_out.as_slice().unwrap_or(&[]));
        let grad_x = grad_x.as_slice_mut().unwrap_or(&mut []);
        py.detach(|| crate::kernels::gelu::gelu_dropout_backward(x, g, grad_x, p, seed))?;
    });
    Ok(())
}

/// Whether a float array for the dropout kernels holds bfloat16 bits (uint16) rather than
/// float32; a TypeError for any other dtype, a ValueError unless C-contiguous.
fn float_kind(a: &Bound<'_, PyAny>, arg: &str) -> PyResult<bool> {
    let arr = a.cast::<PyUntypedArray>().map_err(|_| PyTypeError::new_err(format!("{arg} must be a NumPy array")))?;
    if !arr.is_c_contiguous() {
        return Err(PyValueError::new_err(format!("{arg}: must be C-contiguous")));
    }
    let dtype = arr.dtype();
    if dtype.is_equiv_to(&numpy::dtype::<u16>(a.py())) {
        Ok(true)
    } else if dtype.is_equiv_to(&numpy::dtype::<f32>(a.py())) {
        Ok(false)
    } else {
        Err(PyTypeError::new_err(format!("{arg} must be float32 or uint16 (bfloat16 bits), got {dtype}")))
    }
}

/// `a` as an array of T with `shape`, C-contiguous; errors name `arg`.
fn same_as<'py, T: numpy::Element>(
    a: &Bound<'py, PyAny>,
    arg: &str,
    shape: &[usize],
) -> PyResult<Bound<'py, numpy::PyArrayDyn<T>>> {
    let arr = a.cast::<PyUntypedArray>().map_err(|_| PyTypeError::new_err(format!("{arg} must be a NumPy array")))?;
    let typed = a.cast::<numpy::PyArrayDyn<T>>().map_err(|_| {
        PyTypeError::new_err(format!("{arg} must have the dtype {}, got {}", numpy::dtype::<T>(a.py()), arr.dtype()))
    })?;
    if arr.shape() != shape {
        return Err(PyValueError::new_err(format!("{arg} has shape {:?} but x has shape {shape:?}", arr.shape())));
    }
    if !arr.is_c_contiguous() {
        return Err(PyValueError::new_err(format!("{arg}: must be C-contiguous")));
    }
    Ok(typed.clone())
}

/// `a` borrowed for writing (shape checked when given); an error if it is read-only or
/// overlaps an array already borrowed (an input).
fn writable<'py, T: numpy::Element>(
    a: &Bound<'py, PyAny>,
    arg: &str,
    shape: Option<&[usize]>,
) -> PyResult<numpy::PyReadwriteArrayDyn<'py, T>> {
    let arr = a.cast::<PyUntypedArray>().map_err(|_| PyTypeError::new_err(format!("{arg} must be a NumPy array")))?;
    let typed = same_as::<T>(a, arg, shape.unwrap_or(arr.shape()))?;
    typed
        .try_readwrite()
        .map_err(|_| PyValueError::new_err(format!("{arg}: must be writable and not overlap an input")))
}

/// Add the kernels' functions to the extension module `m`.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(dropout_mask, m)?)?;
    m.add_function(wrap_pyfunction!(gelu_dropout, m)?)?;
    m.add_function(wrap_pyfunction!(gelu_dropout_backward, m)?)?;
    Ok(())
}
