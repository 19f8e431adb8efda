"""Domino's error-aware mixture (Eyuboglu et al., "Domino", ICLR 2022), reimplemented
for the shortcut benchmark because the `domino` package cannot be installed here.

Why not ``pip install domino`` (0.1.5, its latest release): it pins
``scikit-learn==0.24.2``, which has no wheel for CPython 3.11 and whose source build
fails (``ModuleNotFoundError: No module named 'pkg_resources'``); installed with
``--no-deps`` its ``DominoSlicer`` cannot be imported, since it imports
``sklearn.mixture._base._check_X`` (gone from scikit-learn >= 1.0; 1.9 here) and uses
``np.infty`` (gone from numpy 2.0).

What is reproduced, with Domino's defaults (``DominoSlicer(n_slices=5,
covariance_type="diag", n_pca_components=128, n_mixture_components=25,
y_log_likelihood_weight=1, y_hat_log_likelihood_weight=1, max_iter=100,
init_params="confusion", confusion_noise=1e-3)``; scikit-learn's ``GaussianMixture``
defaults ``tol=1e-3``, ``reg_covar=1e-6``, one initialisation):

* embeddings reduced by PCA (fitted on the fit set);
* a mixture whose component ``s`` has a diagonal Gaussian over the embedding, a
  categorical over the label ``y`` (``p_s``) and over the prediction ``y_hat``
  (``phat_s``); the log-likelihood of a sample under ``s`` is
  ``log N(z; mu_s, Sigma_s) + log pi_s + w_y log(y . p_s + eps) + w_yhat log(y_hat .
  phat_s + eps)``; EM until the mean log-likelihood changes by less than ``tol``;
* the "confusion" initialisation: responsibilities ``y (x) y_hat`` (one column per
  (label, prediction) pair) tiled to the number of components, plus uniform noise
  ``* confusion_noise``, normalised;
* the returned slices: the ``n_slices`` components with the largest
  ``|max_c(phat_s - p_s)|`` (Domino's exact expression); a sample's membership of a
  slice is its responsibility for that component (``predict_proba`` with its label and
  prediction).
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from sklearn.decomposition import PCA

EPS = np.finfo(np.float64).eps


def _binary(y: np.ndarray, y_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Domino's binary case: labels 0/1 -> one-hot, a probability -> [1 - p, p]."""
    y = np.asarray(y).astype(int)
    y_hat = np.asarray(y_hat, dtype=np.float64)
    onehot = np.eye(int(y.max()) + 1 if y.max() > 0 else 2)[y]
    if onehot.shape[1] == 1:
        onehot = np.stack([1 - onehot[:, 0], onehot[:, 0]], 1)
    if y_hat.ndim == 1:
        y_hat = np.stack([1 - y_hat, y_hat], 1)
    return onehot, y_hat


class DominoSlicer:
    """Fit with :meth:`fit` (embeddings, labels, predicted probabilities), then
    :meth:`predict_proba` gives ``[n, n_slices]`` slice memberships."""

    def __init__(self, n_slices: int = 5, n_pca_components: int | None = 128,
                 n_mixture_components: int = 25, y_log_likelihood_weight: float = 1.0,
                 y_hat_log_likelihood_weight: float = 1.0, max_iter: int = 100,
                 confusion_noise: float = 1e-3, tol: float = 1e-3, reg_covar: float = 1e-6,
                 random_state: int | None = None) -> None:
        self.n_slices = n_slices
        self.n_pca_components = n_pca_components
        self.n_mixture_components = n_mixture_components
        self.y_log_likelihood_weight = y_log_likelihood_weight
        self.y_hat_log_likelihood_weight = y_hat_log_likelihood_weight
        self.max_iter = max_iter
        self.confusion_noise = confusion_noise
        self.tol = tol
        self.reg_covar = reg_covar
        self.random_state = random_state

    # --- the mixture -------------------------------------------------------------
    def _m_step(self, x: np.ndarray, y: np.ndarray, y_hat: np.ndarray,
                resp: np.ndarray) -> None:
        nk = resp.sum(0) + 10 * EPS
        self.means_ = resp.T @ x / nk[:, None]
        avg_x2 = resp.T @ (x * x) / nk[:, None]
        self.covariances_ = avg_x2 - self.means_ ** 2 + self.reg_covar
        self.weights_ = nk / len(x)
        self.y_probs_ = resp.T @ y / nk[:, None]
        self.y_hat_probs_ = resp.T @ y_hat / nk[:, None]

    def _log_prob(self, x: np.ndarray, y: np.ndarray | None,
                  y_hat: np.ndarray | None) -> np.ndarray:
        prec = 1.0 / self.covariances_
        maha = ((x * x) @ prec.T - 2 * x @ (self.means_ * prec).T
                + (self.means_ ** 2 * prec).sum(1))
        out = -0.5 * (x.shape[1] * np.log(2 * np.pi) + maha) \
            - 0.5 * np.log(self.covariances_).sum(1) + np.log(self.weights_)
        if y is not None:
            out = out + self.y_log_likelihood_weight * np.log(y @ self.y_probs_.T + EPS)
        if y_hat is not None:
            out = out + self.y_hat_log_likelihood_weight * np.log(
                y_hat @ self.y_hat_probs_.T + EPS)
        return out

    def _confusion_init(self, y: np.ndarray, y_hat: np.ndarray,
                        rng: np.random.RandomState) -> np.ndarray:
        n, c = y.shape
        k = self.n_mixture_components
        if k < c * c:
            raise ValueError("the confusion initialisation needs n_mixture_components >= "
                             f"num_classes ** 2 ({k} < {c * c})")
        resp = (y[:, :, None] * y_hat[:, None, :]).reshape(n, -1)
        resp = np.tile(resp, (1, -(-k // (c * c))))[:, :k]
        resp = resp / resp.sum(1, keepdims=True)
        resp = resp + rng.rand(n, k) * self.confusion_noise
        return resp / resp.sum(1, keepdims=True)

    def fit(self, embeddings: np.ndarray, targets: np.ndarray,
            pred_probs: np.ndarray) -> DominoSlicer:
        x = np.asarray(embeddings, dtype=np.float64)
        y, y_hat = _binary(targets, pred_probs)
        self.pca_ = None
        if self.n_pca_components is not None:
            self.pca_ = PCA(self.n_pca_components, random_state=self.random_state).fit(x)
            x = self.pca_.transform(x)
        rng = np.random.RandomState(self.random_state)
        self._m_step(x, y, y_hat, self._confusion_init(y, y_hat, rng))
        bound = -np.inf
        self.converged_ = False
        self.n_iter_ = 0
        for it in range(1, self.max_iter + 1):
            self.n_iter_ = it
            log_prob = self._log_prob(x, y, y_hat)
            norm = logsumexp(log_prob, axis=1)
            self._m_step(x, y, y_hat, np.exp(log_prob - norm[:, None]))
            bound, previous = float(norm.mean()), bound
            if abs(bound - previous) < self.tol:
                self.converged_ = True
                break
        self.lower_bound_ = bound
        error = (self.y_hat_probs_ - self.y_probs_).max(axis=1)
        self.slice_cluster_indices_ = np.argsort(-np.abs(error), kind="stable")[
            :self.n_slices]
        return self

    def predict_proba(self, embeddings: np.ndarray, targets: np.ndarray,
                      pred_probs: np.ndarray) -> np.ndarray:
        """``[n, n_slices]``: each sample's responsibility for each returned slice."""
        x = np.asarray(embeddings, dtype=np.float64)
        if self.pca_ is not None:
            x = self.pca_.transform(x)
        y, y_hat = _binary(targets, pred_probs)
        log_prob = self._log_prob(x, y, y_hat)
        resp = np.exp(log_prob - logsumexp(log_prob, axis=1)[:, None])
        return resp[:, self.slice_cluster_indices_]
