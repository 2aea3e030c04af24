//! Building a Kubernetes client: from an explicit kubeconfig, or inferred the way kube does
//! (`KUBECONFIG`, `~/.kube/config`, then the in-cluster service account).

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// A Kubernetes client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    /// The kubeconfig file is unusable.
    #[error("kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No configuration could be inferred.
    #[error("no Kubernetes configuration found (not in a cluster, no KUBECONFIG, no ~/.kube/config)")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built.
    #[error("kubernetes client")]
    Client(#[source] kube::Error),
}

/// A client from `kubeconfig`, or inferred when `None`.
///
/// # Errors
/// [`KubeClientError`] naming what is missing or broken.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |e: Box<dyn std::error::Error + Send + Sync>| KubeClientError::Kubeconfig {
                path: path.to_owned(),
                source: e,
            };
            let kc = Kubeconfig::read_from(path).map_err(|e| err(Box::new(e)))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| err(Box::new(e)))?
        }
        None => kube::Config::infer().await.map_err(KubeClientError::Infer)?,
    };
    kube::Client::try_from(config).map_err(KubeClientError::Client)
}
