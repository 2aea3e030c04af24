//! The embedded store's configuration, history bound and errors.

use super::*;

/// Configuration of the embedded store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// The store file; it and its directory are created when missing.
    #[serde(default = "default_path")]
    pub path: PathBuf,
}

fn default_path() -> PathBuf {
    PathBuf::from(DEFAULT_PATH)
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self { path: default_path() }
    }
}

impl EmbeddedConfig {
    /// Checks the configuration.
    ///
    /// # Errors
    /// [`EmbeddedError::EmptyPath`].
    pub fn validate(&self) -> Result<(), EmbeddedError> {
        if self.path.as_os_str().is_empty() {
            return Err(EmbeddedError::EmptyPath);
        }
        Ok(())
    }
}

/// How much watch history the log keeps; older events are compacted on the next write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// At most this many events (at least one is always kept).
    pub events: u64,
    /// At most this many bytes of keys and values (the newest event is kept whatever its size).
    pub bytes: u64,
}

impl Default for History {
    /// The last 10,000 events, within 64 MiB.
    fn default() -> Self {
        Self { events: 10_000, bytes: 64 << 20 }
    }
}

/// Failures of the embedded store, each naming its file.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The configured path is empty.
    #[error("embedded store path is empty")]
    EmptyPath,
    /// The directory for the file could not be created.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be opened or created (also: another process has it open).
    #[error("cannot open store file {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// The file was written by an incompatible version.
    #[error("store file {} has format {found}, this version reads format {FORMAT}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The format found in the file.
        found: u64,
    },
    /// A transaction on the file failed.
    #[error("store file {}", path.display())]
    Database {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<redb::Error>,
    },
    /// The blocking task running an operation panicked or was cancelled.
    #[error("store task on {} failed", path.display())]
    Task {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A write failed (disk full, I/O error) and the file is being reopened; see
    /// [Recovery](super#recovery).
    #[error("store file {} cannot be used until it is recovered: {reason}", path.display())]
    Recovering {
        /// The file.
        path: PathBuf,
        /// The failure, or why the last recovery attempt failed.
        reason: String,
    },
    /// The recovery probe (a write of the largest allowed value) failed: there is not room.
    #[error("store file {}: a probe write of {MAX_VALUE_LEN} bytes failed", path.display())]
    Probe {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<StoreError>,
    },
    /// The store was dropped while a watch was still open.
    #[error("store file {} was closed", path.display())]
    Closed {
        /// The file.
        path: PathBuf,
    },
}
