#!/usr/bin/env python3
"""Exports models/all-MiniLM-L6-v2 to ONNX for the ONNX Runtime peer, three ways:

  model.onnx       torch.onnx.export of the Hugging Face BertModel (last hidden state),
                   run with ORT's own graph optimisations (ORT_ENABLE_ALL)
  model_opt.onnx   + onnxruntime.transformers.optimizer's BERT fusions (attention,
                   skip-LayerNorm, bias-GELU), the fusion level users deploy
  model_int8.onnx  model_opt.onnx with dynamic int8 quantization of the MatMul weights
                   (onnxruntime.quantization.quantize_dynamic, per channel)

Each is checked against the fp32 sentence-transformers fixtures
(tests/data/all-MiniLM-L6-v2, 512 texts, mean pooling + L2 as the model folder says):
min and mean cosine go into OUT/onnx_fidelity.json. The fp32 peers must keep
min cosine >= 0.9999; when the fused graph does not, the plain export is the fp32 peer.
Usage (bench/peers/run.sh runs it): .venv-peers/bin/python bench/peers/export_onnx.py OUT
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers import optimizer
from transformers import AutoModel, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
REF = os.path.join(ROOT, "tests", "data", "all-MiniLM-L6-v2")


class LastHidden(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state


def session(path, threads=2):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def embed(sess, tok, texts):
    enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
    feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    hidden = sess.run(None, feeds)[0]
    mask = enc["attention_mask"][..., None].astype(np.float32)
    pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def fidelity(sess, tok):
    texts = [json.loads(line)["text"] for line in open(os.path.join(REF, "reference.jsonl"))][:512]
    ref = np.fromfile(os.path.join(REF, "reference_embeddings.f32"), dtype="<f4")
    ref = ref.reshape(-1, 384)[:len(texts)]
    cos = []
    for start in range(0, len(texts), 32):
        got = embed(sess, tok, texts[start:start + 32])
        cos.extend((got * ref[start:start + 32]).sum(1).tolist())
    return {"min_cosine": float(min(cos)), "mean_cosine": float(np.mean(cos)), "texts": len(cos)}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(MODEL)
    # Eager attention exports the MatMul/Softmax pattern that ORT's Attention fusion knows.
    bert = AutoModel.from_pretrained(MODEL, attn_implementation="eager").eval()
    plain = os.path.join(out, "model.onnx")
    enc = tok(["a sample sentence", "another one, a little longer"], padding=True,
              return_tensors="pt")
    args = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
           "token_type_ids": {0: "batch", 1: "seq"}, "last_hidden_state": {0: "batch", 1: "seq"}}
    torch.onnx.export(LastHidden(bert), args, plain, dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["last_hidden_state"], dynamic_axes=dyn)
    fused = os.path.join(out, "model_opt.onnx")
    opt = optimizer.optimize_model(plain, model_type="bert", num_heads=12, hidden_size=384,
                                   opt_level=1)
    opt.save_model_to_file(fused)
    int8 = os.path.join(out, "model_int8.onnx")
    # The fused graph's com.microsoft ops hide some tensor types from shape inference;
    # they are all fp32.
    quantize_dynamic(fused, int8, weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    report = {name: fidelity(session(path), tok) for name, path in
              (("fp32_plain", plain), ("fp32_fused", fused), ("int8", int8))}
    report["fused_fusions"] = opt.get_fused_operator_statistics()
    report["fp32_peer"] = "fp32_fused" if report["fp32_fused"]["min_cosine"] >= 0.9999 else "fp32_plain"
    report["versions"] = {"onnxruntime": ort.__version__, "torch": torch.__version__}
    with open(os.path.join(out, "onnx_fidelity.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
