"""The driver side: the controller, the journal and the experiment record."""
