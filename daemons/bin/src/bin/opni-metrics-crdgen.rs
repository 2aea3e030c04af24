//! Writes the CRD YAML of opni-metrics' own resources into `deploy/crds/` (or the directory
//! given as the first argument). CI fails when the committed files differ from what this
//! writes (`opni-metrics-kube/tests/crds.rs`).

use std::path::PathBuf;

fn main() {
    let dir = std::env::args_os().nth(1).map_or_else(|| PathBuf::from("deploy/crds"), PathBuf::from);
    let files = match opni_metrics_kube::crd::crd_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("opni-metrics-crdgen: {e}");
            std::process::exit(1);
        }
    };
    for (name, yaml) in files {
        let path = dir.join(name);
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, yaml)) {
            eprintln!("opni-metrics-crdgen: {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("wrote {}", path.display());
    }
}
