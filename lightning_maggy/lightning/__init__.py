"""The Lightning side of a trial: the worker loop, MaggyCallback, the Trainer wrapper and
builder, the Reporter and the trial context. Imports nothing on its own (torch and Lightning
are imported by the modules that need them)."""
