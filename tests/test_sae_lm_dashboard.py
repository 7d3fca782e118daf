"""LM feature dashboards: top contexts, density, histogram, logit weights, JSON export."""

import json

import torch

from interplab.models import Transformer, TransformerConfig
from interplab.sae.dashboard import lm_feature_data, write_lm_dashboards
from interplab.sae.model import SAE, SAEConfig


def test_token_detector_feature_dashboard(tmp_path):
    model = Transformer(TransformerConfig(d_vocab=12, n_ctx=6, d_model=32, n_heads=2, d_mlp=16), seed=0)
    tokens = torch.randint(1, 12, (40, 6), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 0
    e = model.W_E.detach()[3]
    sae = SAE(SAEConfig(d_in=32, d_sae=4, hook_name="hook_embed"), seed=0)
    with torch.no_grad():  # feature 1 fires exactly on token 3 (cosine > 0.9 with its embedding)
        sae.W_enc[:, 1] = e / e.norm()
        sae.b_enc[1] = -0.9 * e.norm()
        sae.W_dec[1] = e / e.norm()
    data = lm_feature_data(sae, model, tokens, [1], token_str=lambda t: f"t{t}", top=5, window=(2, 1), n_logits=3)[1]
    is3 = tokens[:, 1:] == 3
    assert abs(data["density"] - is3.float().sum().item() / tokens.numel()) < 1e-6
    assert len(data["top_contexts"]) == 5
    for c in data["top_contexts"]:
        assert c["tokens"][c["max_index"]] == "t3" and tokens[c["sequence"], c["position"]] == 3
        assert c["activations"][c["max_index"]] == max(c["activations"])
    assert sum(data["histogram"]["counts"]) == is3.sum().item()
    logit = sae.W_dec.detach()[1] @ model.W_U.detach()
    assert data["logits"]["top"][0] == [f"t{int(logit.argmax())}", logit.max().item()]
    assert data["logits"]["bottom"][0] == [f"t{int(logit.argmin())}", logit.min().item()]
    index = write_lm_dashboards(sae, model, tokens, [1, 2], tmp_path, token_str=lambda t: f"<t{t}>")
    exported = json.loads((tmp_path / "dashboards.json").read_text())
    assert [f["feature"] for f in exported["features"]] == [1, 2]
    page = (tmp_path / "feature_1.html").read_text()
    assert "&lt;t3&gt;" in page and "<t3>" not in page  # tokens escaped, highlighted
    assert "feature_2.html" in index.read_text()
