//! Slurm: a run started by `srun` knows which task of which job step it is, and `seal-job`
//! binds the rank records of one job step into one signed job record ([`seal`]).
//!
//! Guarantees of [`RankIdentity::from_env`]: outside Slurm (`SLURM_JOB_ID` unset) there is no
//! rank and nothing changes; under Slurm every field comes from the task's `SLURM_*` variables,
//! and a task whose variables are missing or not numbers is an error naming the variable (the
//! run would otherwise be recorded as a rank it is not), as is a rank outside `0..world_size`.
//! The batch script itself (no `SLURM_STEP_ID`) is step `batch`, one task of world size 1.
//! [`RankIdentity::apply`] gives the job `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (these win over
//! the spec's `env`) and `MASTER_ADDR`/`MASTER_PORT` where the launcher has them.

pub mod firewall;
pub mod netns;
pub mod seal;

use sealrun_verifier::record::SlurmRank;

/// Why the Slurm task's identity cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("SLURM_JOB_ID is set, but {var} is {found}: run sealrun as a task of a job step (`srun sealrun run …`), or unset SLURM_JOB_ID")]
    Variable { var: &'static str, found: String },
    #[error("SLURM_PROCID {rank} is not below SLURM_NTASKS {world_size}")]
    RankOutOfRange { rank: u32, world_size: u32 },
}

/// Which task of which Slurm job step this process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankIdentity(pub SlurmRank);

/// Variables copied into the sandbox when the launcher has them (a rendezvous address the
/// batch script chose).
const PASSED_THROUGH: [&str; 2] = ["MASTER_ADDR", "MASTER_PORT"];

impl RankIdentity {
    /// This process's identity from its environment; `None` outside Slurm.
    pub fn from_env() -> Result<Option<RankIdentity>, SlurmError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// The identity from the variables `get` returns (for tests: any map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, SlurmError> {
        let Some(job_id) = get("SLURM_JOB_ID").filter(|j| !j.is_empty()) else {
            return Ok(None);
        };
        let first = |vars: &[&'static str]| -> Result<String, SlurmError> {
            vars.iter()
                .find_map(|v| get(v))
                .ok_or(SlurmError::Variable {
                    var: vars[0],
                    found: "not set".into(),
                })
        };
        let number = |vars: &[&'static str]| -> Result<u32, SlurmError> {
            let v = first(vars)?;
            v.trim().parse().map_err(|_| SlurmError::Variable {
                var: vars[0],
                found: format!("{v:?}, not a number"),
            })
        };
        let rank = number(&["SLURM_PROCID"])?;
        // The batch script itself (no step id) is one task, whatever the job's task count.
        let step_id = get("SLURM_STEP_ID").or_else(|| get("SLURM_STEPID"));
        let world_size = match step_id {
            None => 1,
            Some(_) => number(&["SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_NPROCS"])?,
        };
        if rank >= world_size {
            return Err(SlurmError::RankOutOfRange { rank, world_size });
        }
        let node = match get("SLURMD_NODENAME") {
            Some(n) => n,
            None => nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown-host".into()),
        };
        Ok(Some(RankIdentity(SlurmRank {
            job_id,
            step_id: step_id.unwrap_or_else(|| "batch".into()),
            rank,
            world_size,
            local_rank: number(&["SLURM_LOCALID"])?,
            node,
            node_id: number(&["SLURM_NODEID"]).unwrap_or(0),
            nodelist: first(&[
                "SLURM_STEP_NODELIST",
                "SLURM_JOB_NODELIST",
                "SLURM_NODELIST",
            ])
            .unwrap_or_default(),
            cluster: get("SLURM_CLUSTER_NAME"),
            network: None,
        })))
    }

    /// The job step as `JOB.STEP`.
    pub fn step(&self) -> String {
        format!("{}.{}", self.0.job_id, self.0.step_id)
    }

    /// The variables the job gets (see the module docs), after the spec's own.
    pub fn apply(&self, env: &mut Vec<(String, String)>) {
        let r = &self.0;
        let mut set = |k: &str, v: String| {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v));
        };
        set("RANK", r.rank.to_string());
        set("WORLD_SIZE", r.world_size.to_string());
        set("LOCAL_RANK", r.local_rank.to_string());
        for k in PASSED_THROUGH {
            if let Ok(v) = std::env::var(k) {
                set(k, v);
            }
        }
    }
}

/// The job network of a run whose spec asks for one (`mode`): made or joined, and named in
/// the rank's identity (so every record of the run lists it); `None` for `network = "none"`.
pub fn job_network(
    mode: crate::spec::NetworkMode,
    ports: (u16, u16),
    rank: Option<&mut RankIdentity>,
) -> Result<Option<netns::JobNetns>, String> {
    match (mode, rank) {
        (crate::spec::NetworkMode::None, _) => Ok(None),
        (crate::spec::NetworkMode::Job, None) => {
            Err("network = \"job\" needs a Slurm task (SLURM_JOB_ID is not set)".into())
        }
        (crate::spec::NetworkMode::Job, Some(r)) => {
            let n = netns::JobNetns::acquire(r, ports).map_err(|e| e.to_string())?;
            r.0.network = Some(n.describe());
            Ok(Some(n))
        }
    }
}

/// Give the sandbox the job network, if there is one.
pub fn apply_network(
    net: Option<&netns::JobNetns>,
    config: &mut sealrun_sandbox::SandboxConfig,
) -> Result<(), String> {
    if let Some(n) = net {
        config.network = sealrun_sandbox::Network::Join {
            netns: n.fd().map_err(|e| e.to_string())?,
            allow: n.allow(),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn outside_slurm_there_is_no_rank() {
        assert_eq!(
            RankIdentity::from_vars(vars(&[("SLURM_PROCID", "1")])).unwrap(),
            None
        );
    }

    #[test]
    fn a_task_is_read_and_bad_variables_are_named() {
        let task = [
            ("SLURM_JOB_ID", "42"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "1"),
            ("SLURMD_NODENAME", "n1"),
            ("SLURM_NODEID", "0"),
            ("SLURM_STEP_NODELIST", "n1"),
        ];
        let r = RankIdentity::from_vars(vars(&task)).unwrap().unwrap();
        assert_eq!((r.0.rank, r.0.world_size, r.step()), (1, 2, "42.0".into()));
        let mut env = vec![("RANK".to_string(), "9".to_string())];
        r.apply(&mut env);
        assert!(
            env.contains(&("RANK".into(), "1".into())) && env.len() == 3,
            "{env:?}"
        );

        let mut bad = task;
        bad[2] = ("SLURM_PROCID", "x");
        let e = RankIdentity::from_vars(vars(&bad)).unwrap_err().to_string();
        assert!(
            e.contains("SLURM_PROCID") && e.contains("not a number"),
            "{e}"
        );
        bad[2] = ("SLURM_PROCID", "2");
        let e = RankIdentity::from_vars(vars(&bad)).unwrap_err().to_string();
        assert!(e.contains("not below SLURM_NTASKS 2"), "{e}");
        let e = RankIdentity::from_vars(vars(&task[..3]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SLURM_NTASKS is not set"), "{e}");
        // The batch script: one task of the batch step, whatever the job's SLURM_NTASKS.
        let batch: Vec<(&str, &str)> = task
            .iter()
            .copied()
            .filter(|(k, _)| *k != "SLURM_STEP_ID")
            .map(|(k, v)| {
                if k == "SLURM_PROCID" {
                    (k, "0")
                } else {
                    (k, v)
                }
            })
            .collect();
        let r = RankIdentity::from_vars(vars(&batch)).unwrap().unwrap();
        assert_eq!((r.0.world_size, r.step()), (1, "42.batch".into()));
    }
}
