//! The one error type of the core. Every check that can fail on caller input returns a
//! `CoreError` naming the argument and, where there is one, the first offending index;
//! the Python binding turns it into `ValueError` (`MemoryError` for an output too big to
//! allocate).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreError {
    /// The argument at fault, as the Python caller named it (`offsets`, `ts`, ...).
    pub arg: &'static str,
    /// What is wrong, in one sentence fragment.
    pub msg: String,
    /// The inputs were fine but the output would not fit in memory.
    pub out_of_memory: bool,
}

impl CoreError {
    pub fn new(arg: &'static str, msg: impl Into<String>) -> Self {
        CoreError { arg, msg: msg.into(), out_of_memory: false }
    }

    /// `what`'s output of `bytes` could not be allocated (or its size overflows).
    pub fn out_of_memory(what: &'static str, bytes: Option<usize>) -> Self {
        let msg = match bytes {
            Some(b) => {
                format!("the output needs {:.1} GiB, more than could be allocated", b as f64 / (1u64 << 30) as f64)
            }
            None => "the output would need more bytes than an address space holds".to_string(),
        };
        CoreError { arg: what, msg, out_of_memory: true }
    }

    /// `what`'s output of `need` bytes is more than the `have` bytes of memory available now.
    pub fn more_than_available(what: &'static str, need: usize, have: usize) -> Self {
        let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
        let msg = format!(
            "the output needs {:.1} GiB, more than the {:.1} GiB of memory available now (MemAvailable); \
             ask for a smaller output or free memory",
            gib(need),
            gib(have)
        );
        CoreError { arg: what, msg, out_of_memory: true }
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.arg, self.msg)
    }
}

impl std::error::Error for CoreError {}

pub type Result<T> = std::result::Result<T, CoreError>;
