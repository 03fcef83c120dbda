"""Training pages: job list, launch form, job dashboard, compare runs."""
