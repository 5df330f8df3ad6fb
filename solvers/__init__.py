"""Backend-neutral solvers written against the array API and LazyMatrix."""
