"""Auto-interp: explain -> simulate -> score, offline rules and an OpenAI-compatible endpoint (fake, on loopback)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from interplab.errors import InterplabError
from interplab.sae.autointerp import ChatBackend, Context, RuleBackend, autointerp, explain_and_score


class FakeChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions: explains by the token shown at 10, simulates
    10 for that token; records requests."""

    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChat.requests.append((self.path, self.headers.get("Authorization"), body))
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("We are studying"):
            lines = [ln.split("\t") for ln in prompt.split("\n") if "\t" in ln]
            best = max(lines, key=lambda p: int(p[1]))[0]
            reply = f"the token {best}"
        else:
            token = prompt.split("explained as: the token ")[1].split("\n")[0]
            toks = prompt.split("\n\n", 1)[1].split("\n")
            reply = "\n".join(f"{t}\t{10 if t == token else 0}" for t in toks)
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), FakeChat)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    FakeChat.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def _feature_on(token, n=12, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    vocab = ["a", "b", "c", "d", "X"]
    ids = torch.randint(len(vocab), (n, T), generator=g)
    toks = [[vocab[i] for i in row] for row in ids.tolist()]
    acts = torch.tensor([[3.0 if t == token else 0.0 for t in row] for row in toks])
    labels = [[{f"token={t}", "vowel" if t in "a" else "consonant"} for t in row] for row in toks]
    return acts, toks, labels


def test_chat_backend_against_fake_server(server):
    acts, toks, _ = _feature_on("X")
    result = autointerp(ChatBackend(server, key="sk-test", model="fake"), acts, toks, n_top=3, n_random=2,
                        n_held_top=3, n_held_random=3)
    assert result["explanation"] == "the token X" and result["score"] == 1.0
    path, auth, body = FakeChat.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "fake"
    assert "X\t10" in body["messages"][0]["content"]  # quantised activations shown to the explainer
    with pytest.raises(InterplabError, match="chat endpoint"):
        ChatBackend("http://127.0.0.1:1/v1", timeout=2).chat("hi")  # nothing listens on port 1


def test_rule_backend_finds_the_label_and_scores_a_wrong_one_low():
    acts, toks, labels = _feature_on("c")
    result = autointerp(RuleBackend(), acts, toks, labels, n_top=4, n_random=4, n_held_top=4, n_held_random=4)
    assert result["explanation"] == "token=c" and result["score"] == 1.0
    held = [Context(t, a.tolist(), lab) for t, a, lab in zip(toks, acts, labels)]

    class Wrong(RuleBackend):
        def explain(self, top, random):
            return "token=a"

    assert explain_and_score(Wrong(), held, [], held)["score"] < 0.2
