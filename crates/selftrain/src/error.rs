//! The crate's one error type: the errors of the crates below it, passed through unchanged
//! (their messages already name the file and item), and pupil-selftrain's own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Data(#[from] pupil_data::Error),
    #[error(transparent)]
    Augment(#[from] pupil_augment::ConfigError),
    /// A config that cannot be read or holds a bad value.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Msg(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn msg(m: impl std::fmt::Display) -> Self {
        Error::Msg(m.to_string())
    }
    pub fn config(m: impl std::fmt::Display) -> Self {
        Error::Config(m.to_string())
    }
}

/// Returns early with an [`Error::Msg`].
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::error::Error::msg(format!($($t)*))) };
}
pub(crate) use bail;
