"""Why RI gets less Average Increase: how confident the retrieved unseen images are.

Same references, seeds (the 150 reported ones) and retrievals as `make evaluate`
on the VGG demo model. Run: .venv/bin/python benchmarks/retrieval_confidence.py
"""
import numpy as np
import torch

from repinterp import RepresentativeInterpreter
from repinterp.demo.data import load_fashion_mnist
from repinterp.demo.models import load_demo_model

model, meta = load_demo_model(progress=False)
x, _ = load_fashion_mnist("train")
xt, _ = load_fashion_mnist("test")
refs = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:10000]]
order = torch.randperm(10000, generator=torch.Generator().manual_seed(1))
seeds = order[40:190].tolist()
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
print("share Y_c>0.99 RI", np.mean(np.array(ri_p) > 0.99), "Euclid", np.mean(np.array(eu_p) > 0.99))
print("same-class share RI", np.mean(ri_same), "Euclid", np.mean(eu_same))
