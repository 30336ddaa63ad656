//! Compiles `farm/v1/farm.proto` with protox, a pure-Rust protobuf compiler,
//! so building farm never needs `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "farm/v1/farm.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    tonic_prost_build::configure()
        // The coordinator routes its methods itself (coordinator/src/
        // service/routes.rs) with farm's zero-copy framing.
        .build_server(false)
        // Bulk payloads decode as `Bytes` slices of the receive buffer
        // instead of fresh copies.
        .bytes(".farm.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
