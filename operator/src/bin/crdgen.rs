//! `crdgen`: writes the CRDs to `crds/*.yaml` (and the Helm chart's copy), or
//! prints them with `--stdout`.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let docs = strata_operator::crd::crd_documents()?;
    if std::env::args().any(|a| a == "--stdout") {
        for (_, yaml) in &docs {
            println!("---\n{yaml}");
        }
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in [root.join("crds"), root.join("helm/strata/crds")] {
        std::fs::create_dir_all(&dir)?;
        for (name, yaml) in &docs {
            let path = dir.join(name);
            std::fs::write(&path, yaml)?;
            println!("wrote {}", path.display());
        }
    }
    let reference = root.join("docs/crds.md");
    std::fs::write(&reference, strata_operator::crd::reference::markdown())?;
    println!("wrote {}", reference.display());
    Ok(())
}
