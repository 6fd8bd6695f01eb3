//! The thin PyO3 layer: borrow NumPy arrays, release the GIL, call the pure-Rust function,
//! hand the result back without a copy. Nothing here decides anything about the data. The `///`
//! comments on the functions are their Python docstrings, copied into longrec_core/_core.pyi by
//! `python -m longrec_core.stubdoc`.

mod kernels;

use std::borrow::Cow;

use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray1, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PySlice;

use crate::error::CoreError;
use crate::kshift::Scheme;
use crate::windows::{Regime, WindowSpec, Windows};

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        if e.out_of_memory {
            return PyMemoryError::new_err(e.to_string());
        }
        PyValueError::new_err(e.to_string())
    }
}

/// A borrowed 1-D integer array of any width.
enum IntArray<'py> {
    I8(PyReadonlyArray1<'py, i8>),
    I16(PyReadonlyArray1<'py, i16>),
    I32(PyReadonlyArray1<'py, i32>),
    I64(PyReadonlyArray1<'py, i64>),
    U8(PyReadonlyArray1<'py, u8>),
    U16(PyReadonlyArray1<'py, u16>),
    U32(PyReadonlyArray1<'py, u32>),
    U64(PyReadonlyArray1<'py, u64>),
}

/// Dispatch on the element type of an `IntArray`, binding its contiguous slice to `$s`.
macro_rules! with_slice {
    ($arr:expr, $s:ident => $body:expr) => {
        match $arr {
            IntArray::I8(a) => {
                let $s = a.as_slice().unwrap_or(&[]);
                $body
            }
            IntArray::I16(a) => {
                let $s = a.as_slice().unwrap_or(&[]);
                $body
            }
            IntArray::I32(a) => {
                let $s = a.as_slice().unwrap_or(&[]);
                $body
            }
            IntArray::I64(a) => {
                let $s = a.as_slice().unwrap_or(&[]);
                $body
            }
            IntArray::U8(a) => {
                let $s = a.as_slice().unwrap_or(&[]);
                $body
            }
            IntArray::U16(a) => {
                let $s = a.as_slice().unwrap_or(&[]);
                $body
            }
            IntArray::U32(a) => {
                let $s = a.as_slice().unwrap_or(&[]);
                $body
            }
            IntArray::U64(a) => {
                let $s = a.as_slice().unwrap_or(&[]);
                $body
            }
        }
    };
}

impl IntArray<'_> {
    /// The values as i64, borrowed when they already are (the usual case), else converted.
    fn to_i64(&self, arg: &'static str) -> PyResult<Cow<'_, [i64]>> {
        if let IntArray::I64(a) = self {
            return Ok(Cow::Borrowed(a.as_slice().unwrap_or(&[])));
        }
        if let IntArray::U64(a) = self {
            let s = a.as_slice().unwrap_or(&[]);
            if let Some(i) = s.iter().position(|&v| v > i64::MAX as u64) {
                return Err(CoreError::new(arg, format!("{arg}[{i}] = {} does not fit in int64", s[i])).into());
            }
        }
        // The macro expands for every width, int64 included (returned above), hence the allow.
        #[allow(clippy::unnecessary_cast)]
        let owned = with_slice!(self, s => s.iter().map(|&v| v as i64).collect());
        Ok(Cow::Owned(owned))
    }
}

/// Accept a NumPy array (or anything `numpy.asarray` takes) of integers, 1-D and contiguous.
fn int_array<'py>(obj: &Bound<'py, PyAny>, arg: &'static str) -> PyResult<IntArray<'py>> {
    let py = obj.py();
    let arr: Bound<'py, PyUntypedArray> = match obj.cast::<PyUntypedArray>() {
        Ok(a) => a.clone(),
        Err(_) => {
            // A Python sequence: let NumPy pick the dtype, except that an empty list
            // (float64 to NumPy) is simply no integers.
            let np = py.import("numpy")?;
            let a = np.call_method1("asarray", (obj,))?.cast_into::<PyUntypedArray>()?;
            if a.len() == 0 {
                np.call_method1("zeros", (0, "int64"))?.cast_into::<PyUntypedArray>()?
            } else {
                a
            }
        }
    };
    if arr.ndim() != 1 {
        return Err(PyTypeError::new_err(format!("{arg} must be a 1-D array, got {} dimensions", arr.ndim())));
    }
    let kind = arr.dtype().kind();
    if kind != b'i' && kind != b'u' {
        let dtype = arr.dtype().str()?.to_string();
        return Err(PyTypeError::new_err(format!("{arg} must be an integer array, got dtype {dtype}")));
    }
    if !arr.is_c_contiguous() {
        return Err(PyValueError::new_err(format!("{arg} must be contiguous (pass numpy.ascontiguousarray({arg}))")));
    }
    let any = arr.as_any();
    Ok(if let Ok(a) = any.extract() {
        IntArray::I64(a)
    } else if let Ok(a) = any.extract() {
        IntArray::I32(a)
    } else if let Ok(a) = any.extract() {
        IntArray::U32(a)
    } else if let Ok(a) = any.extract() {
        IntArray::U64(a)
    } else if let Ok(a) = any.extract() {
        IntArray::I16(a)
    } else if let Ok(a) = any.extract() {
        IntArray::U16(a)
    } else if let Ok(a) = any.extract() {
        IntArray::I8(a)
    } else {
        IntArray::U8(any.extract()?)
    })
}

fn optional<'py>(obj: Option<&Bound<'py, PyAny>>, arg: &'static str) -> PyResult<Option<IntArray<'py>>> {
    match obj {
        Some(o) if !o.is_none() => Ok(Some(int_array(o, arg)?)),
        _ => Ok(None),
    }
}

type I64Array<'py> = Bound<'py, PyArray1<i64>>;
type Triple<'py> = (I64Array<'py>, I64Array<'py>, I64Array<'py>);

/// (seq, start, stop) as three views of the one buffer the core filled (no copy). Each is a
/// C-contiguous int64 array; the buffer lives while any of them does.
fn triple<'py>(py: Python<'py>, windows: Windows) -> PyResult<Triple<'py>> {
    let n = windows.len() as isize;
    let buf = PyArray1::from_vec(py, windows.into_buffer());
    let column = |k: isize| -> PyResult<I64Array<'py>> {
        Ok(buf.get_item(PySlice::new(py, k * n, (k + 1) * n, 1))?.cast_into::<PyArray1<i64>>()?)
    };
    Ok((column(0)?, column(1)?, column(2)?))
}

/// Stable (user, time) order of a raw log and the CSR offsets of its users.
///
/// Returns ``(perm, offsets)``: ``users[perm]`` and ``ts[perm]`` are sorted by user, then
/// time, ties in time keeping input order; the k-th smallest distinct user id owns
/// ``perm[offsets[k]:offsets[k+1]]`` (``offsets`` has U + 1 entries for U distinct users). Users
/// may be any non-negative integers.
#[pyfunction]
fn group<'py>(
    py: Python<'py>,
    users: &Bound<'py, PyAny>,
    ts: &Bound<'py, PyAny>,
) -> PyResult<(I64Array<'py>, I64Array<'py>)> {
    let (users, ts) = (int_array(users, "users")?, int_array(ts, "ts")?);
    let (users, ts) = (users.to_i64("users")?, ts.to_i64("ts")?);
    let (perm, offsets) = py.detach(|| crate::group::group(&users, &ts))?;
    Ok((PyArray1::from_vec(py, perm), PyArray1::from_vec(py, offsets)))
}

/// Session offsets over the grouped events: a new session at every sequence start and
/// wherever consecutive events of one sequence are more than ``gap`` time units apart.
#[pyfunction]
fn sessionize<'py>(
    py: Python<'py>,
    offsets: &Bound<'py, PyAny>,
    ts: &Bound<'py, PyAny>,
    gap: i64,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let (offsets, ts) = (int_array(offsets, "offsets")?, int_array(ts, "ts")?);
    let (offsets, ts) = (offsets.to_i64("offsets")?, ts.to_i64("ts")?);
    let out = py.detach(|| crate::sessions::sessionize(&offsets, &ts, gap))?;
    Ok(PyArray1::from_vec(py, out))
}

/// Training windows as pointers ``(seq, start, stop)`` into the event array.
///
/// For sequence u with usable events [a, b) (b = ``ends[u]`` when given; a raised to
/// ``b - max_history`` when given), windows end at stop = b, b - stride, ... while
/// stop - a >= min_len, and start = max(a, stop - window - 1): at most ``window + 1``
/// events, inputs the first stop-start-1, targets the same shifted by one. ``regime="last"``
/// keeps only stop = b. Windows of one sequence come in time order. The three arrays are
/// views of one buffer (one allocation is cheaper than three), freed when the last of them is;
/// copy one to keep it alone.
#[pyfunction]
#[pyo3(signature = (offsets, ends=None, *, window, stride, min_len=2, max_history=None, regime="sliding"))]
#[allow(clippy::too_many_arguments)]
fn windows<'py>(
    py: Python<'py>,
    offsets: &Bound<'py, PyAny>,
    ends: Option<&Bound<'py, PyAny>>,
    window: i64,
    stride: i64,
    min_len: i64,
    max_history: Option<i64>,
    regime: &str,
) -> PyResult<Triple<'py>> {
    let regime = Regime::parse(regime)?;
    let (offsets, ends) = (int_array(offsets, "offsets")?, optional(ends, "ends")?);
    let offsets = offsets.to_i64("offsets")?;
    let ends = ends.as_ref().map(|e| e.to_i64("ends")).transpose()?;
    let spec = WindowSpec { window, min_len, max_history };
    let out = py.detach(|| crate::windows::windows(&offsets, ends.as_deref(), spec, stride, regime))?;
    triple(py, out)
}

/// Windows that end at session ends: each training event of a sequence (but its first) is the
/// target of exactly one window, inside its own session, with the events before it as context.
///
/// Returns ``(seq, start, stop, first_target)``: window i is the slice [start, stop) of the
/// event array; its targets are the events [first_target, stop) and the events before
/// first_target are context only. A session [s, e) (clipped to the training end) gives windows
/// stop = e, e - window, ... while stop > max(s, a + 1), first_target = max(s, a + 1, stop -
/// window), start = max(a, stop - window - 1). ``sessions`` are offsets over the same events
/// that start a session at every sequence start (``sessionize`` gives them).
#[pyfunction]
#[pyo3(signature = (offsets, sessions, ends=None, *, window, max_history=None))]
#[allow(clippy::type_complexity)]
fn session_windows<'py>(
    py: Python<'py>,
    offsets: &Bound<'py, PyAny>,
    sessions: &Bound<'py, PyAny>,
    ends: Option<&Bound<'py, PyAny>>,
    window: i64,
    max_history: Option<i64>,
) -> PyResult<(I64Array<'py>, I64Array<'py>, I64Array<'py>, I64Array<'py>)> {
    let (offsets, sessions) = (int_array(offsets, "offsets")?, int_array(sessions, "sessions")?);
    let ends = optional(ends, "ends")?;
    let (offsets, sessions) = (offsets.to_i64("offsets")?, sessions.to_i64("sessions")?);
    let ends = ends.as_ref().map(|e| e.to_i64("ends")).transpose()?;
    let w = py.detach(|| {
        crate::session_windows::session_windows(&offsets, &sessions, ends.as_deref(), window, max_history)
    })?;
    Ok((
        PyArray1::from_vec(py, w.seq),
        PyArray1::from_vec(py, w.start),
        PyArray1::from_vec(py, w.stop),
        PyArray1::from_vec(py, w.first_target),
    ))
}

/// ``per_seq`` random windows per sequence: stop uniform in [a + min_len, b],
/// start = max(a, stop - window - 1). The same seed gives the same windows on any machine
/// and any number of threads.
#[pyfunction]
#[pyo3(signature = (offsets, ends=None, *, window, per_seq=1, min_len=2, max_history=None, seed))]
#[allow(clippy::too_many_arguments)]
fn sample_windows<'py>(
    py: Python<'py>,
    offsets: &Bound<'py, PyAny>,
    ends: Option<&Bound<'py, PyAny>>,
    window: i64,
    per_seq: i64,
    min_len: i64,
    max_history: Option<i64>,
    seed: u64,
) -> PyResult<Triple<'py>> {
    let (offsets, ends) = (int_array(offsets, "offsets")?, optional(ends, "ends")?);
    let offsets = offsets.to_i64("offsets")?;
    let ends = ends.as_ref().map(|e| e.to_i64("ends")).transpose()?;
    let spec = WindowSpec { window, min_len, max_history };
    let out = py.detach(|| crate::windows::sample_windows(&offsets, ends.as_deref(), spec, per_seq, seed))?;
    triple(py, out)
}

/// Materialize a batch: row b holds ``items[start[b]:stop[b]]`` right-aligned in a
/// ``[B, length + 1]`` int64 array, left-padded with ``pad``; a longer slice keeps its last
/// ``length + 1`` events. ``items`` may be any integer width (int32 from a data dir is read
/// in place). With ``out`` (a C-contiguous int64 ``[B, length + 1]`` array) the batch is
/// written there and ``out`` is returned, so a loop can reuse one buffer. Batches of 2^20
/// values or more are filled by all cores; smaller ones on the calling thread, where waking
/// the thread pool would cost more than it saves. The GIL is released either way.
#[pyfunction]
#[pyo3(signature = (items, start, stop, *, length, pad=0, out=None))]
#[allow(clippy::too_many_arguments)]
fn gather<'py>(
    py: Python<'py>,
    items: &Bound<'py, PyAny>,
    start: &Bound<'py, PyAny>,
    stop: &Bound<'py, PyAny>,
    length: i64,
    pad: i64,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let items = int_array(items, "items")?;
    let (start, stop) = (int_array(start, "start")?, int_array(stop, "stop")?);
    let (start, stop) = (start.to_i64("start")?, stop.to_i64("stop")?);
    crate::validate::check_at_least("length", length, 1)?;
    let (rows, width) = (start.len(), length as usize + 1);
    if let Some(out) = out {
        let out =
            out.cast::<PyArray2<i64>>().map_err(|_| PyTypeError::new_err("out must be a 2-D int64 NumPy array"))?;
        if out.shape() != [rows, width] {
            let (r, w) = (out.shape()[0], out.shape()[1]);
            return Err(PyValueError::new_err(format!(
                "out has shape ({r}, {w}) but the batch is ({rows}, {width}) = (rows, length + 1)"
            )));
        }
        // as_slice_mut also accepts Fortran order, whose flat layout is not the batch's.
        if !out.is_c_contiguous() {
            return Err(PyValueError::new_err("out must be C-contiguous"));
        }
        let mut guard = out
            .try_readwrite()
            .map_err(|_| PyValueError::new_err("out is not writeable (read-only, or it overlaps an input)"))?;
        let slots = guard.as_slice_mut().map_err(|_| PyValueError::new_err("out must be C-contiguous"))?;
        with_slice!(&items, s => py.detach(|| crate::gather::gather_into(s, &start, &stop, length, pad, slots)))?;
        drop(guard);
        return Ok(out.clone());
    }
    let flat = with_slice!(&items, s => py.detach(|| crate::gather::gather(s, &start, &stop, length, pad)))?;
    let batch = Array2::from_shape_vec((rows, width), flat).expect("gather returns rows * (length + 1) values");
    Ok(batch.into_pyarray(py))
}

/// k-shift row indices ``[n, k]`` of a table with ``rows`` rows for each id.
///
/// h = splitmix64(id ^ splitmix64(seed)) as unsigned 64-bit. ``scheme="mix"``:
/// row_c = splitmix64(h ^ K_c) mod rows with K_c = splitmix64(0xC0FFEE + c) | 1;
/// ``"rotate"``: rotl64(h, c) mod rows; ``"rotate_signed"``: the paper code's signed
/// rotation, kept to measure its collisions.
#[pyfunction]
#[pyo3(signature = (ids, *, k, rows, seed, scheme="mix"))]
fn kshift_rows<'py>(
    py: Python<'py>,
    ids: &Bound<'py, PyAny>,
    k: i64,
    rows: i64,
    seed: u64,
    scheme: &str,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let scheme = Scheme::parse(scheme)?;
    let ids = int_array(ids, "ids")?;
    let ids = ids.to_i64("ids")?;
    let flat = py.detach(|| crate::kshift::kshift_rows(&ids, k, rows, seed, scheme))?;
    let batch = Array2::from_shape_vec((ids.len(), k as usize), flat).expect("kshift_rows returns n * k values");
    Ok(batch.into_pyarray(py))
}

/// Leave-``holdout``-out ends per sequence: ``b - holdout`` when the sequence keeps at
/// least ``min_history`` events before it, else ``b`` (too short: all in training).
#[pyfunction]
#[pyo3(signature = (offsets, holdout=1, min_history=1))]
fn leave_one_out_ends<'py>(
    py: Python<'py>,
    offsets: &Bound<'py, PyAny>,
    holdout: i64,
    min_history: i64,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let offsets = int_array(offsets, "offsets")?;
    let offsets = offsets.to_i64("offsets")?;
    let out = py.detach(|| crate::splits::leave_one_out_ends(&offsets, holdout, min_history))?;
    Ok(PyArray1::from_vec(py, out))
}

/// Temporal ends per sequence: the first index whose time is at or after ``cutoff``
/// (the sequence end when there is none).
#[pyfunction]
fn temporal_ends<'py>(
    py: Python<'py>,
    offsets: &Bound<'py, PyAny>,
    ts: &Bound<'py, PyAny>,
    cutoff: i64,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let (offsets, ts) = (int_array(offsets, "offsets")?, int_array(ts, "ts")?);
    let (offsets, ts) = (offsets.to_i64("offsets")?, ts.to_i64("ts")?);
    let out = py.detach(|| crate::splits::temporal_ends(&offsets, &ts, cutoff))?;
    Ok(PyArray1::from_vec(py, out))
}

/// Bytes of memory this process can still fill without swapping or being killed: Linux's
/// MemAvailable (free memory plus the caches it can drop), at most what the cgroup's memory limit
/// leaves; None where it cannot be told. The core checks its large outputs against the same figure.
#[pyfunction]
fn available_memory() -> Option<usize> {
    crate::alloc::available_memory()
}

/// The compiled core of longrec (rust/): the data core's functions over integer arrays, and the
/// training kernels over float arrays.
///
/// Integer arrays of any width are accepted (anything ``numpy.asarray`` turns into a 1-D integer
/// array); they must be C-contiguous. Outputs are int64 arrays handed over without a copy. Bad input
/// raises ValueError naming the argument and the first offending index (so do a non-contiguous array
/// and an ``out`` of the wrong shape); an array of a non-integer dtype or not 1-D raises TypeError;
/// valid arguments whose output cannot be allocated (say, 2^40 windows) raise MemoryError.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(group, m)?)?;
    m.add_function(wrap_pyfunction!(sessionize, m)?)?;
    m.add_function(wrap_pyfunction!(windows, m)?)?;
    m.add_function(wrap_pyfunction!(sample_windows, m)?)?;
    m.add_function(wrap_pyfunction!(session_windows, m)?)?;
    m.add_function(wrap_pyfunction!(gather, m)?)?;
    m.add_function(wrap_pyfunction!(kshift_rows, m)?)?;
    m.add_function(wrap_pyfunction!(leave_one_out_ends, m)?)?;
    m.add_function(wrap_pyfunction!(temporal_ends, m)?)?;
    m.add_function(wrap_pyfunction!(available_memory, m)?)?;
    kernels::register(m)
}
