//! sealrun under a real Slurm (munged, slurmctld and slurmd started by
//! `sealrun_integration::slurm::Cluster`): one test that runs every scenario in
//! turn, since only one cluster can run on the machine at a time.

use sealrun_integration::slurm::Cluster;

fn cluster() -> Cluster {
    assert!(
        sealrun_integration::slurm::available(),
        "slurm-wlm and munge must be installed (.ci/run installs them)"
    );
    Cluster::start().unwrap_or_else(|e| panic!("cannot start the test cluster: {e}"))
}

#[test]
fn slurm_scenarios() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let out = c
        .command("srun")
        .args([
            "-n2",
            "bash",
            "-c",
            "echo rank=$SLURM_PROCID of $SLURM_NTASKS",
        ])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("rank=0 of 2") && text.contains("rank=1 of 2"),
        "{text}"
    );
}
