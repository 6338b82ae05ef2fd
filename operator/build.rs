//! Generates the admin gRPC client from the broker's contract (`broker/proto/admin.proto`).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../broker/proto/admin.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&[proto], &["../broker/proto"])?;
    Ok(())
}
