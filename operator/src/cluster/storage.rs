//! Broker volumes after creation. A StatefulSet's `volumeClaimTemplates` cannot
//! change, so a Cluster whose `spec.storage` changed keeps the templates it was
//! created with (the API server would refuse the whole StatefulSet otherwise), and
//! the change is carried out on the PersistentVolumeClaims themselves: a larger
//! size is an expansion of every broker's claim (the StorageClass must allow it);
//! a smaller size or another class cannot be done in place and is reported as an
//! invalid spec, leaving the brokers alone.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use crate::crd::cluster::StorageSpec;

/// What `spec.storage` asks of volumes that already exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageChange {
    /// The spec matches the claims (or the cluster is new).
    None,
    /// Grow every broker's claim to `to`.
    Expand { from: String, to: String },
    /// Not possible in place; the message says why.
    Refused(String),
}

/// The size of a Kubernetes quantity in bytes (`10Gi`, `500M`, `1e9`, `1073741824`);
/// None for anything that is not a whole number of bytes.
pub fn quantity_bytes(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        s if s.starts_with(['e', 'E']) => 10u128.checked_pow(s[1..].parse().ok()?)?,
        _ => return None,
    };
    match number.split_once('.') {
        None => number.parse::<u128>().ok()?.checked_mul(multiplier),
        Some((whole, frac)) => {
            // 1.5Gi: exact when the fraction resolves to whole bytes.
            let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
            let digits: u128 = format!("{whole}{frac}").parse().ok()?;
            let bytes = digits.checked_mul(multiplier)?;
            (bytes % scale == 0).then(|| bytes / scale)
        }
    }
}

/// The data claim template the StatefulSet was created with.
pub fn claim_template(sts: &StatefulSet) -> Option<&PersistentVolumeClaim> {
    sts.spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("data"))
}

/// The requested size and class of a claim (or claim template).
pub fn claim_request(claim: &PersistentVolumeClaim) -> (Option<String>, Option<String>) {
    let spec = claim.spec.as_ref();
    let size = spec
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    (size, spec.and_then(|s| s.storage_class_name.clone()))
}

/// Compares `spec` with the claim template of the existing StatefulSet.
pub fn plan(existing: Option<&StatefulSet>, spec: &StorageSpec) -> StorageChange {
    let Some(template) = existing.and_then(claim_template) else {
        return StorageChange::None;
    };
    let (size, class) = claim_request(template);
    if spec.class.is_some() && spec.class != class {
        return StorageChange::Refused(format!(
            "spec.storage.class cannot change on existing brokers (their volumes use {}, the spec asks for {})",
            class.as_deref().unwrap_or("the default class"),
            spec.class.as_deref().unwrap_or("the default class")
        ));
    }
    let Some(size) = size else {
        return StorageChange::None;
    };
    match (quantity_bytes(&size), quantity_bytes(&spec.size)) {
        (Some(have), Some(want)) if want > have => StorageChange::Expand {
            from: size,
            to: spec.size.clone(),
        },
        (Some(have), Some(want)) if want < have => StorageChange::Refused(format!(
            "spec.storage.size cannot shrink below the brokers' {size} (asked for {})",
            spec.size
        )),
        (_, None) => StorageChange::Refused(format!(
            "spec.storage.size `{}` is not a whole number of bytes",
            spec.size
        )),
        _ => StorageChange::None,
    }
}

/// Puts the existing StatefulSet's claim templates into the built one: they are
/// immutable, and their change is carried out on the claims instead.
pub fn keep_claim_templates(desired: &mut StatefulSet, existing: Option<&StatefulSet>) {
    let Some(templates) = existing
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.volume_claim_templates.clone())
    else {
        return;
    };
    if let Some(spec) = desired.spec.as_mut() {
        spec.volume_claim_templates = Some(templates);
    }
}

/// Whether claim `pvc` still needs to grow to `to`.
pub fn needs_expansion(pvc: &PersistentVolumeClaim, to: &str) -> bool {
    let (size, _) = claim_request(pvc);
    match (size.as_deref().and_then(quantity_bytes), quantity_bytes(to)) {
        (Some(have), Some(want)) => want > have,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(size: &str, class: Option<&str>) -> StatefulSet {
        let class = class.map_or(String::new(), |c| format!("\n      storageClassName: {c}"));
        serde_yaml::from_str(&format!(
            "metadata:\n  name: demo\nspec:\n  selector: {{}}\n  serviceName: demo-brokers\n  template: {{}}\n  \
             volumeClaimTemplates:\n  - metadata:\n      name: data\n    spec:\n      resources:\n        requests:\n          storage: {size}{class}\n"
        ))
        .expect("sts")
    }

    fn spec(size: &str, class: Option<&str>) -> StorageSpec {
        StorageSpec {
            size: size.into(),
            class: class.map(String::from),
        }
    }

    #[test]
    fn quantities_in_bytes() {
        assert_eq!(quantity_bytes("10Gi"), Some(10 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("1e9"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("1073741824"), Some(1 << 30));
        assert_eq!(quantity_bytes("0.5"), None);
        assert_eq!(quantity_bytes("10 GB"), None);
        assert_eq!(quantity_bytes("lots"), None);
    }

    #[test]
    fn storage_grows_in_place_and_never_shrinks_or_changes_class() {
        let s = sts("10Gi", Some("fast"));
        assert_eq!(plan(None, &spec("1Gi", None)), StorageChange::None);
        assert_eq!(
            plan(Some(&s), &spec("10Gi", Some("fast"))),
            StorageChange::None
        );
        // 10240Mi is the same size, written differently.
        assert_eq!(plan(Some(&s), &spec("10240Mi", None)), StorageChange::None);
        assert_eq!(
            plan(Some(&s), &spec("20Gi", None)),
            StorageChange::Expand {
                from: "10Gi".into(),
                to: "20Gi".into()
            }
        );
        let StorageChange::Refused(why) = plan(Some(&s), &spec("5Gi", None)) else {
            panic!("a shrink must be refused");
        };
        assert!(
            why.contains("cannot shrink below the brokers' 10Gi"),
            "{why}"
        );
        let StorageChange::Refused(why) = plan(Some(&s), &spec("10Gi", Some("slow"))) else {
            panic!("a class change must be refused");
        };
        assert!(why.contains("use fast"), "{why}");
    }

    #[test]
    fn the_existing_claim_templates_are_kept() {
        let mut desired = sts("20Gi", None);
        let existing = sts("10Gi", None);
        keep_claim_templates(&mut desired, Some(&existing));
        let (size, _) = claim_request(claim_template(&desired).expect("template"));
        assert_eq!(size.as_deref(), Some("10Gi"));
        let pvc: PersistentVolumeClaim = serde_yaml::from_str(
            "metadata:\n  name: data-demo-0\nspec:\n  resources:\n    requests:\n      storage: 10Gi\n",
        )
        .expect("pvc");
        assert!(needs_expansion(&pvc, "20Gi"));
        assert!(!needs_expansion(&pvc, "10Gi"));
    }
}
