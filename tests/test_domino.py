"""The shortcut benchmark's Domino baseline (benchmarks/domino_mixture.py): its mixture is
scikit-learn's diagonal Gaussian mixture when the label terms are switched off, and the
label terms pull components onto the model's errors."""
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from benchmarks.domino_mixture import DominoSlicer


def blobs(seed: int, n: int = 600, d: int = 6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (3, d))
    lab = rng.integers(0, 3, n)
    x = centres[lab] + rng.normal(0, 1, (n, d))
    y = (lab == 0).astype(int)
    return x, y, lab


@pytest.mark.parametrize("seed", range(3))
def test_without_label_terms_it_is_sklearns_gaussian_mixture(seed):
    x, y, _ = blobs(seed)
    p = np.clip(y + np.random.default_rng(seed).normal(0, 0.1, len(y)), 0, 1)
    ours = DominoSlicer(n_pca_components=None, n_mixture_components=4, max_iter=7,
                        tol=0.0, y_log_likelihood_weight=0, y_hat_log_likelihood_weight=0,
                        random_state=seed)
    ours.fit(x, y, p)
    # the same starting point: our first M-step from the confusion initialisation
    start = DominoSlicer(n_pca_components=None, n_mixture_components=4, max_iter=0,
                         random_state=seed).fit(x, y, p)
    gm = GaussianMixture(4, covariance_type="diag", max_iter=7, tol=0.0,
                         weights_init=start.weights_ / start.weights_.sum(),
                         means_init=start.means_, precisions_init=1 / start.covariances_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(x)
    assert np.allclose(ours.means_, gm.means_, atol=1e-9)
    assert np.allclose(ours.covariances_, gm.covariances_, atol=1e-9)
    assert np.allclose(ours.weights_, gm.weights_, atol=1e-9)


def test_the_slices_are_the_components_where_the_model_errs():
    """Blob 1 is labelled 0 but predicted 1: the component on it has the largest
    ``|max_c(phat - p)|`` and is returned first, and its members score highest."""
    x, _, lab = blobs(0)
    y = (lab == 0).astype(int)
    pred = np.where(lab == 1, 0.95, np.where(lab == 0, 0.9, 0.05))
    slicer = DominoSlicer(n_slices=2, n_pca_components=None, n_mixture_components=4,
                          random_state=0).fit(x, y, pred)
    member = slicer.predict_proba(x, y, pred)
    assert member.shape == (len(x), 2)
    top = np.argsort(-member[:, 0], kind="stable")[:100]
    assert (lab[top] == 1).all()


def test_confusion_init_needs_enough_components():
    x, y, _ = blobs(0)
    with pytest.raises(ValueError, match="num_classes"):
        DominoSlicer(n_pca_components=None, n_mixture_components=3).fit(x, y, y * 0.9)
