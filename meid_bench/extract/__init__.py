"""Features from raw videos: ``meid-bench features extract`` (docs/features.md, section "Extracting").

One job per module: :mod:`.catalog` (backbones, weight files, preprocessing values; no torch), :mod:`.spec` (the
recommended feature specifications; no torch), :mod:`.sample` (which instants), :mod:`.decode` (video files and
frame folders), :mod:`.preprocess` (torchvision's transforms), :mod:`.backbones` (the networks), :mod:`.weights`
(published, local or random weights), :mod:`.write` (resumable writing) and :mod:`.run` (the pipeline).

Importing this package loads no torch: ``from meid_bench.extract.run import extract_features`` does.
"""
