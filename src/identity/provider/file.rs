//! `provider = "file"`: another agent keeps a token file fresh; vmagent reads it.

use std::path::PathBuf;

use super::{FetchError, MAX_TOKEN_BYTES};

/// The token file.
#[derive(Debug, Clone)]
pub struct FileProvider {
    /// As configured (system path), for messages.
    pub sys: PathBuf,
    /// Resolved inside the root.
    pub host: PathBuf,
}

impl FileProvider {
    /// The file's content.
    pub fn read(&self) -> Result<Vec<u8>, FetchError> {
        let err = |source| FetchError::File {
            path: self.sys.display().to_string(),
            source,
        };
        match crate::fsx::read_file(&self.host, MAX_TOKEN_BYTES) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(err(std::io::ErrorKind::NotFound.into())),
            Err(e) => Err(err(e)),
        }
    }
}
