import flordb as flor
import numpy as np


def write_fp32(tensor, file):
    file.write(tensor.astype(np.float32).tobytes())


def write_bf16(tensor, file):
    file.write(tensor.astype(np.float16).tobytes())


def write_tensors(tensors, layers, file, dtype):
    write = write_fp32 if dtype == "float32" else write_bf16
    write(tensors["embed.weight"], file)
    for i in range(layers):
        write(tensors[f"block.{i}.attn.weight"], file)
        flor.log("written", i)
    for i in range(layers):
        write(tensors[f"block.{i}.mlp.weight"], file)
    write(tensors["head.weight"], file)
