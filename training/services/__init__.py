"""Write-side logic of the training app: jobs, metrics, artifacts, the model registry."""
