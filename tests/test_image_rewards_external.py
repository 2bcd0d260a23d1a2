"""CLIP score with a tiny random CLIP, and the HTTP reward client against local servers."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from maskgrpo.rewards.clip import CLIP_MEAN, CLIP_STD, CharTokenizer, ClipScorer, preprocess
from maskgrpo.rewards.http import HttpReward, encode_png

VOCAB = 64


def tiny_clip() -> Any:
    transformers = pytest.importorskip("transformers")
    text = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=40,
        bos_token_id=VOCAB - 2,
        eos_token_id=VOCAB - 1,
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    with torch.random.fork_rng():  # model init draws from the global RNG; keep it untouched
        torch.manual_seed(0)
        return transformers.CLIPModel(cfg)


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def test_clip_scores(tmp_path: Path) -> None:
    model = tiny_clip()
    scorer = ClipScorer(model, CharTokenizer(VOCAB, 40), batch_size=2)
    prompts = ["a photo of a red circle", "a photo of two bars", "a blue square"]
    imgs = images(3)
    scores = scorer(prompts, imgs)
    assert len(scores) == 3 and all(s is not None and -1.0 <= s <= 1.0 for s in scores)
    assert scorer(prompts, [torch.from_numpy(i) for i in imgs]) == scores
    assert scorer([prompts[0], [{"role": "user"}]], imgs[:2])[1] is None
    model.save_pretrained(tmp_path / "clip")
    loaded = ClipScorer.from_pretrained(str(tmp_path / "clip"), tokenizer=CharTokenizer(VOCAB, 40))
    assert loaded(prompts, imgs) == pytest.approx(scores, abs=1e-5)


def test_preprocess_normalises_and_crops() -> None:
    red = np.zeros((32, 48, 3), dtype=np.uint8)
    red[..., 0] = 255
    pix = preprocess([red], 16)
    assert pix.shape == (1, 3, 16, 16)
    want = [(1.0 - CLIP_MEAN[0]) / CLIP_STD[0], -CLIP_MEAN[1] / CLIP_STD[1]]
    assert pix[0, 0].mean().item() == pytest.approx(want[0], abs=1e-4)
    assert pix[0, 1].mean().item() == pytest.approx(want[1], abs=1e-4)


def test_char_tokenizer_ends_with_eos() -> None:
    tok = CharTokenizer(VOCAB, 8)
    out = tok(["ab", "a much longer prompt"])
    assert out["input_ids"].shape == (2, 8)
    assert out["input_ids"][0, 3].item() == VOCAB - 1 and out["attention_mask"][0].sum() == 4
    assert out["input_ids"][1, -1].item() == VOCAB - 1


Behaviour = Callable[[BaseHTTPRequestHandler, dict, int], None]


@pytest.fixture
def server() -> Iterator[Callable[[Behaviour], tuple[str, list[dict]]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(behaviour: Behaviour) -> tuple[str, list[dict]]:
        seen: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen.append(body)
                behaviour(self, body, len(seen))

            def log_message(self, *args: object) -> None:
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/score", seen

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def reply(handler: BaseHTTPRequestHandler, code: int, payload: object) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def mean_red(handler: BaseHTTPRequestHandler, body: dict, calls: int) -> None:
    """Scores each image by its mean red channel, read back from the PNG."""
    from PIL import Image as pil

    scores = []
    for b64 in body["images"]:
        img = np.asarray(pil.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
        scores.append(float(img[..., 0].mean()))
    reply(handler, 200, {"rewards": scores})


def test_png_round_trip() -> None:
    pil = pytest.importorskip("PIL.Image")
    img = images(1)[0]
    back = np.asarray(pil.open(io.BytesIO(encode_png(img))).convert("RGB"))
    assert np.array_equal(back, img)


def test_http_reward_scores_and_batches(server: Callable) -> None:
    pytest.importorskip("PIL.Image")
    url, seen = server(mean_red)
    imgs = images(5)
    client = HttpReward(url, batch_size=2, forward_columns=["tag"])
    tags = ["a", "b", "c", "d", "e"]
    out = client(["p"] * 5, imgs, tag=tags)
    assert out == pytest.approx([float(i[..., 0].mean()) for i in imgs])
    assert len(seen) == 3 and seen[0]["tag"] == ["a", "b"] and seen[0]["prompts"] == ["p", "p"]


def test_http_reward_retries_a_flaky_server(server: Callable) -> None:
    def flaky(handler: BaseHTTPRequestHandler, body: dict, calls: int) -> None:
        if calls <= 2:
            reply(handler, 503, {"error": "busy"})
        else:
            reply(handler, 200, {"rewards": [0.5, None]})

    url, seen = server(flaky)
    out = HttpReward(url, retries=3, backoff=0.01)(["a", "b"], images(2))
    assert out == [0.5, None] and len(seen) == 3


def test_http_reward_gives_none_when_the_server_hangs(server: Callable) -> None:
    def hang(handler: BaseHTTPRequestHandler, body: dict, calls: int) -> None:
        time.sleep(1.0)

    url, seen = server(hang)
    start = time.monotonic()
    out = HttpReward(url, timeout=0.2, retries=1, backoff=0.01)(["a"], images(1))
    assert out == [None] and len(seen) == 2
    assert time.monotonic() - start < 2.0


def test_http_reward_does_not_retry_client_errors(server: Callable) -> None:
    url, seen = server(lambda h, b, c: reply(h, 400, {"error": "bad"}))
    assert HttpReward(url, retries=3, backoff=0.01)(["a"], images(1)) == [None]
    assert len(seen) == 1
    with pytest.raises(ValueError, match="http"):
        HttpReward("ftp://x")
