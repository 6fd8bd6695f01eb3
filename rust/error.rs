//! The one error type of the core. Every check that can fail on caller input returns a
//! `CoreError` naming the argument and, where there is one, the first offending index;
//! the Python binding turns it into `ValueError`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreError {
    /// The argument at fault, as the Python caller named it (`offsets`, `ts`, ...).
    pub arg: &'static str,
    /// What is wrong, in one sentence fragment.
    pub msg: String,
}

impl CoreError {
    pub fn new(arg: &'static str, msg: impl Into<String>) -> Self {
        CoreError { arg, msg: msg.into() }
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.arg, self.msg)
    }
}

impl std::error::Error for CoreError {}

pub type Result<T> = std::result::Result<T, CoreError>;
