//! Generates the admin gRPC server and client from `proto/admin.proto`; messages also
//! derive `serde::Serialize` so the CLI can print them as JSON.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/admin.proto");
    println!("cargo:rerun-if-changed=proto/internal.proto");
    tonic_prost_build::configure()
        .type_attribute(".strata.admin.v1", "#[derive(serde::Serialize)]")
        .compile_protos(&["proto/admin.proto"], &["proto"])?;
    tonic_prost_build::configure()
        .bytes(".strata.internal.v1")
        .compile_protos(&["proto/internal.proto"], &["proto"])?;
    Ok(())
}
