"""nionswift-emedge's HPC client: submit, stage, follow and fetch jobs on a local subprocess,
Slurm through slurmrestd, or NERSC's Superfacility API - one :class:`Client`, the same verbs.

No Swift import; only ``requests`` (and the standard library) on the client side.
"""
from hpc_client.client import Client, client_for, make_backend, open_client
from hpc_client.errors import (AuthError, ConfigError, HPCError, JobFailed, JobNotFound, StagingError,
                               Unreachable)
from hpc_client.job import Job, JobSpec, JobState, Resources
from hpc_client.transport import RetryPolicy, Secret

__all__ = ["AuthError", "Client", "ConfigError", "HPCError", "Job", "JobFailed", "JobNotFound", "JobSpec",
           "JobState", "Resources", "RetryPolicy", "Secret", "StagingError", "Unreachable", "client_for",
           "make_backend", "open_client"]
