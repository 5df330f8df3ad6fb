"""lazymat-sample: a third-party plugin, as a plugin author writes one from lazymat's README.

It brings an array library of its own (:mod:`lazymat_sample.tensor`: a small array type with
an array-API namespace), a backend for it, and an engine that splits every request into
blocks of rows and columns, delegates each block to the best other engine and merges the
partial results. It imports ``lazymat.plugin`` and nothing else of lazymat, and is held to
lazymat's conformance suite (``tests/test_sample_plugin.py``).
"""
