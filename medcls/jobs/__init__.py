"""Running runs: train one stored run (execute), in a worker process (worker, local), queued by the job
manager (manager), on a Ray cluster (ray_backend) or split over processes with torchrun (torchrun)."""
