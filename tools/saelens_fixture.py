"""Writes tests/data/saelens_* with the real sae-lens (run in a throwaway venv, not the project's).

    python3 -m venv /tmp/saelens-venv && /tmp/saelens-venv/bin/pip install torch==2.13.0 sae-lens==6.54.12
    /tmp/saelens-venv/bin/python tools/saelens_fixture.py [OURS_DIR]

Without OURS_DIR it writes two small SAEs as SAELens saves them (with and without
apply_b_dec_to_input, random non-unit decoder norms) and the outputs SAELens computes on fixed
inputs (expected.json). With OURS_DIR (a directory written by interplab.sae.saelens.save_saelens)
it loads it with sae_lens.SAE.load_from_disk and prints its outputs on
``linspace(-2, 2, 5 * d_in).reshape(5, d_in)``, to compare with interplab's on the same inputs.
"""

import json
import sys
from pathlib import Path

import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig

here = Path(__file__).resolve().parents[1] / "tests" / "data"
x = torch.linspace(-2, 2, 5 * 6).reshape(5, 6)
if len(sys.argv) > 1:
    sae = SAE.load_from_disk(sys.argv[1])
    xs = torch.linspace(-2, 2, 5 * sae.cfg.d_in).reshape(5, sae.cfg.d_in)
    print(json.dumps({"type": type(sae).__name__, "hook_name": sae.cfg.metadata.hook_name,
                      "x_hat": sae(xs).tolist()}))
    sys.exit()
for name, apply_b_dec in (("saelens_standard", True), ("saelens_no_bdec_input", False)):
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=6, d_sae=10, apply_b_dec_to_input=apply_b_dec))
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.W_dec.normal_()
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.5)
    sae.cfg.metadata.hook_name = "blocks.0.mlp.hook_post"
    sae.save_model(here / name)
    expected = {"x": x.tolist(), "f": sae.encode(x).tolist(), "x_hat": sae(x).tolist()}
    (here / name / "expected.json").write_text(json.dumps(expected))
    print("wrote", here / name)
