"""lazymat.ml: machine learning on symbolic matrices (k-NN, K-means, GMM, KDE, spectral, kernel PCA).

Every estimator here is written against the array API + LazyMatrix, like ``lazymat.solvers``:
pairwise quantities (distances, kernels, responsibilities) are formulas reduced on the fly,
never N-by-M arrays. scikit-learn's conventions (``fit``, ``predict``, ``transform``,
``get_params``) make them drop into ``sklearn.pipeline.Pipeline``.
"""
