//! Generates the faultline.v1 gRPC code with a vendored protoc, so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded; PROTOC tells prost-build which protoc to run.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/faultline/v1/faultline.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Clients are built on our own mTLS channel; the generated `connect` helper would also
        // clash with the AgentSession.Connect RPC.
        .build_transport(false)
        // Small per-call buffers: see src/codec.rs.
        .codec_path("crate::codec::LeanCodec")
        .compile_protos(&["proto/faultline/v1/faultline.proto"], &["proto"])?;
    Ok(())
}
