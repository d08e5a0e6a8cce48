//! The run journal now lives in [`crate::journal`]; this path stays so older imports keep
//! compiling.

pub use crate::journal::*;
