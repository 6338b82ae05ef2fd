//! Services: a headless one that gives each broker a stable DNS name
//! (`<cluster>-<n>.<cluster>-brokers.<ns>.svc`) and a ClusterIP one that clients
//! bootstrap from.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::object_meta;
use crate::cluster::{selector_labels, ValidatedCluster};

fn ports(cluster: &ValidatedCluster, with_metrics: bool) -> Vec<ServicePort> {
    let l = &cluster.spec.listeners;
    let mut ports = vec![("kafka", l.kafka), ("admin", l.admin)];
    if let Some(s) = &l.secure {
        ports.push(("secure", s.port));
    }
    if with_metrics {
        ports.push(("metrics", l.metrics));
    }
    ports
        .into_iter()
        .map(|(name, port)| ServicePort {
            name: Some(name.into()),
            port,
            target_port: Some(IntOrString::String(name.into())),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        })
        .collect()
}

/// Headless Service; lists brokers before they are ready so they can find each other.
pub fn headless(cluster: &ValidatedCluster) -> Service {
    Service {
        metadata: object_meta(cluster, cluster.names.headless_service()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&cluster.name)),
            ports: Some(ports(cluster, true)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Bootstrap Service for clients (only ready brokers).
pub fn bootstrap(cluster: &ValidatedCluster) -> Service {
    Service {
        metadata: object_meta(cluster, cluster.names.bootstrap_service()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&cluster.name)),
            ports: Some(ports(cluster, false)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::cluster;
    use crate::cluster::validate;

    #[test]
    fn headless_service_publishes_not_ready_brokers() {
        let v = validate(&cluster("replicas: 3")).expect("valid");
        let s = headless(&v);
        assert_eq!(s.metadata.name.as_deref(), Some("demo-brokers"));
        let spec = s.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let names: Vec<_> = spec
            .ports
            .expect("ports")
            .iter()
            .filter_map(|p| p.name.clone())
            .collect();
        assert_eq!(names, ["kafka", "admin", "metrics"]);
    }

    #[test]
    fn bootstrap_service_uses_configured_ports() {
        let v = validate(&cluster("listeners:\n  kafka: 19092")).expect("valid");
        let s = bootstrap(&v);
        assert_eq!(s.metadata.name.as_deref(), Some("demo-bootstrap"));
        let ports = s.spec.and_then(|s| s.ports).expect("ports");
        assert_eq!(ports[0].port, 19092);
        assert_eq!(ports[1].port, 9093);
        assert_eq!(ports.len(), 2);
    }
}
