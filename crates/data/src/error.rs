//! One error type for every reader, writer and evaluator of the crate.
//! Each variant names the file and, where there is one, the item that was wrong.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OS error is part of the message, not a `source`: printed with its causes
    /// (`{:#}`), it would appear twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: malformed JSON at line {line}, column {column}: {msg}")]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        msg: String,
    },
    #[error("{path}: malformed XML: {msg}")]
    Xml { path: PathBuf, msg: String },
    #[error("{path}: cannot decode image: {msg}")]
    Image { path: PathBuf, msg: String },
    #[error("{path}: {item}: {msg}")]
    Invalid {
        path: PathBuf,
        item: String,
        msg: String,
    },
    #[error("{0}")]
    Other(String),
    #[cfg(feature = "tensor")]
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl AsRef<Path>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            error,
        }
    }
    pub fn json(path: impl AsRef<Path>, e: &serde_json::Error) -> Self {
        // serde_json's Display already appends "at line L column C"; keep only the message.
        let full = e.to_string();
        let msg = match full.rfind(" at line ") {
            Some(i) => full[..i].to_string(),
            None => full,
        };
        Error::Json {
            path: path.as_ref().to_path_buf(),
            line: e.line(),
            column: e.column(),
            msg,
        }
    }
    pub fn invalid(
        path: impl AsRef<Path>,
        item: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            path: path.as_ref().to_path_buf(),
            item: item.into(),
            msg: msg.into(),
        }
    }
    pub fn image(path: impl AsRef<Path>, msg: impl std::fmt::Display) -> Self {
        Error::Image {
            path: path.as_ref().to_path_buf(),
            msg: msg.to_string(),
        }
    }
}
