//! Generates the SPIFFE Workload API server from `proto/workload.proto`
//! with a protoc shipped as a crate, so a build needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let well_known = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_with_config(
            config,
            &[std::path::PathBuf::from("proto/workload.proto")],
            &[std::path::PathBuf::from("proto"), well_known],
        )?;
    Ok(())
}
