"""Every state change of the annotation app (HackSoft style: services write, selectors read)."""
