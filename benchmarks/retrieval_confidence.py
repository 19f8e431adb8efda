"""Why RI gets less Average Increase: how confident the retrieved unseen images are.

Same references, seeds (the 150 reported ones) and retrievals as `make evaluate`
on the VGG demo model. Run: python -m benchmarks.retrieval_confidence
"""
import numpy as np
import torch

from benchmarks import harness
from repinterp import RepresentativeInterpreter


def main() -> None:
    harness.parser(__doc__).parse_args()
    model, _ = harness.demo_model()
    x, xt = harness.fashion()
    refs = harness.draw(x, 10000)
    _, seeds = harness.reported_seeds(10000, 40, 150)
    it = RepresentativeInterpreter(model, "features", seed=0, progress=False).fit(refs)
    f = it.features(xt, progress=False)
    logp = it.predict_features(f, logits=True).double().softmax(1)
    pred = logp.argmax(1)
    ri_p, eu_p, ri_same, eu_same = [], [], [], []
    for s in seeds:
        region = it.explain(s)
        c = region.predicted_class
        a = region.rank_features(f)[0][:50]
        e = torch.cdist(it.features_[s][None], f)[0].topk(50, largest=False).indices
        ri_p += logp[a, c].tolist()
        eu_p += logp[e, c].tolist()
        ri_same.append((pred[a] == c).double().mean().item())
        eu_same.append((pred[e] == c).double().mean().item())
    print("median Y_c RI", np.median(ri_p), "Euclid", np.median(eu_p))
    print("share Y_c>0.99 RI", np.mean(np.array(ri_p) > 0.99), "Euclid",
          np.mean(np.array(eu_p) > 0.99))
    print("same-class share RI", np.mean(ri_same), "Euclid", np.mean(eu_same))


if __name__ == "__main__":
    main()
