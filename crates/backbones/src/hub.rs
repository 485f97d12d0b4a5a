//! Checkpoint sources: a local safetensors file or a Hugging Face Hub repository
//! (`hf:owner/name[@revision][/file]`, default file `model.safetensors`), fetched through
//! hf-hub so its cache (`HF_HOME`), endpoint (`HF_ENDPOINT`) and offline mode
//! (`HF_HUB_OFFLINE=1`) are honoured.
use candle_core::{Error, Result};
use std::path::PathBuf;

/// Where a checkpoint comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointSource {
    File(PathBuf),
    Hub {
        repo: String,
        revision: String,
        file: String,
    },
}

impl CheckpointSource {
    /// Parses `hf:owner/name[@rev][/file]` or a path.
    pub fn parse(spec: &str) -> Result<Self> {
        let Some(rest) = spec.strip_prefix("hf:") else {
            return Ok(CheckpointSource::File(PathBuf::from(spec)));
        };
        let parts: Vec<&str> = rest.splitn(3, '/').collect();
        if parts.len() < 2 || parts[0].is_empty() || parts[1].is_empty() {
            return Err(Error::Msg(format!(
                "{spec}: a Hub checkpoint is hf:owner/name[@revision][/file]"
            )));
        }
        let (name, revision) = match parts[1].split_once('@') {
            Some((n, r)) => (n, r.to_string()),
            None => (parts[1], "main".to_string()),
        };
        let file = parts
            .get(2)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "model.safetensors".to_string());
        Ok(CheckpointSource::Hub {
            repo: format!("{}/{}", parts[0], name),
            revision,
            file,
        })
    }

    /// A local path to the checkpoint, downloading it into the Hub cache if needed.
    pub fn resolve(&self) -> Result<PathBuf> {
        match self {
            CheckpointSource::File(p) => {
                if p.is_file() {
                    Ok(p.clone())
                } else {
                    Err(Error::Msg(format!(
                        "{}: no such checkpoint file",
                        p.display()
                    )))
                }
            }
            CheckpointSource::Hub {
                repo,
                revision,
                file,
            } => {
                let hub_repo = hf_hub::Repo::with_revision(
                    repo.clone(),
                    hf_hub::RepoType::Model,
                    revision.clone(),
                );
                let cache = hf_hub::Cache::from_env();
                let offline = std::env::var("HF_HUB_OFFLINE")
                    .map(|v| !v.is_empty() && v != "0")
                    .unwrap_or(false);
                if offline {
                    return cache.repo(hub_repo).get(file).ok_or_else(|| {
                        Error::Msg(format!(
                            "hf:{repo}@{revision}/{file}: not in the Hub cache ({}) and HF_HUB_OFFLINE is set",
                            cache.path().display()
                        ))
                    });
                }
                let api = hf_hub::api::sync::ApiBuilder::from_env()
                    .with_progress(false)
                    .with_retries(0)
                    .build()
                    .map_err(|e| Error::Msg(format!("hf:{repo}: {e}")))?;
                api.repo(hub_repo)
                    .get(file)
                    .map_err(|e| Error::Msg(format!("hf:{repo}@{revision}/{file}: {e}")))
            }
        }
    }
}

/// Resolves a checkpoint spec (path or `hf:...`) to a local file.
pub fn resolve(spec: &str) -> Result<PathBuf> {
    CheckpointSource::parse(spec)?.resolve()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_specs() {
        assert_eq!(
            CheckpointSource::parse("hf:timm/tf_efficientnet_b7.ns_jft_in1k").unwrap(),
            CheckpointSource::Hub {
                repo: "timm/tf_efficientnet_b7.ns_jft_in1k".into(),
                revision: "main".into(),
                file: "model.safetensors".into()
            }
        );
        assert_eq!(
            CheckpointSource::parse("hf:a/b@v1/sub/w.safetensors").unwrap(),
            CheckpointSource::Hub {
                repo: "a/b".into(),
                revision: "v1".into(),
                file: "sub/w.safetensors".into()
            }
        );
        assert!(CheckpointSource::parse("hf:nope").is_err());
        assert_eq!(
            CheckpointSource::parse("x.safetensors").unwrap(),
            CheckpointSource::File("x.safetensors".into())
        );
        assert!(resolve("/no/such/file.safetensors")
            .unwrap_err()
            .to_string()
            .contains("/no/such/file.safetensors"));
    }
}
