import numpy as np
import pandas as pd

df = pd.read_csv("results.csv")
summary = df.groupby("run").agg({"loss": "min", "acc": "max"})
summary.to_csv("summary.csv")
print(summary.describe())
