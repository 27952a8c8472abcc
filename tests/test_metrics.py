"""The video scores (exvideo_ms/metrics/): their arithmetic against torchmetrics on the same features (Fréchet
distance, which FVD and FID share; Inception Score; the CLIP scores), and each network against its PyTorch
original with random weights, through the converter (I3D against cd-fvd's, end to end to the FVD)."""
import mindspore as ms
import numpy as np
import pytest
import torch

from exvideo_ms import backend
from exvideo_ms.checkpoint import network_shapes

from exvideo_ms.metrics.clip_scores import clip_image_score, clip_text_score, frame_consistency
from exvideo_ms.metrics.frechet import FeatureStatistics, feature_statistics, frechet_distance
from exvideo_ms.metrics.inception_score import inception_score
from tests.references import torchmetrics_image


def _features(seed, n=300, d=48, shift=0.0):
    g = np.random.default_rng(seed)
    mix = g.standard_normal((d, d)) / np.sqrt(d)
    return g.standard_normal((n, d)) @ mix + shift


@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_frechet_distance_equals_torchmetrics_and_the_matrix_square_root_form(shift):
    from scipy import linalg
    _compute_fid = torchmetrics_image("fid")._compute_fid
    a, b = feature_statistics(_features(0)), feature_statistics(_features(1, shift=shift))
    ours = frechet_distance(a, b)
    t = lambda x: torch.from_numpy(x)  # noqa: E731
    theirs = float(_compute_fid(t(a.mean), t(a.cov), t(b.mean), t(b.cov)))
    assert abs(ours - theirs) <= 1e-6 * abs(theirs)
    # the form pytorch-fid and cd-fvd compute: a matrix square root of Σ₁Σ₂
    root = linalg.sqrtm(a.cov @ b.cov).real
    direct = float(np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov + b.cov - 2 * root))
    assert abs(ours - direct) <= 1e-6 * abs(direct)
    assert abs(frechet_distance(a, a)) <= 1e-8 * np.trace(a.cov)  # a set against itself: 0


def test_feature_statistics_are_numpys_and_round_trip_without_overwriting(tmp_path):
    f = _features(2, n=40, d=6)
    st = feature_statistics(f)
    np.testing.assert_allclose(st.cov, np.cov(f.T), rtol=1e-12)
    assert st.count == 40
    path = st.save(tmp_path / "ref.npz")
    back = FeatureStatistics.load(path)
    assert np.array_equal(back.mean, st.mean) and np.array_equal(back.cov, st.cov) and back.count == 40
    with pytest.raises(FileExistsError, match="already exists; not overwritten"):
        st.save(path)
    np.savez(tmp_path / "other.npz", mean=st.mean)
    with pytest.raises(ValueError, match=r"lacks \['count', 'cov'\]"):
        FeatureStatistics.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="feature sizes differ: 6 and 5"):
        frechet_distance(st, feature_statistics(f[:, :5]))
    with pytest.raises(ValueError, match=r"\(n, D\) with n >= 2"):
        feature_statistics(f[:1])


def test_inception_score_equals_torchmetrics_on_the_same_logits():
    """torchmetrics shuffles, cuts equal chunks and reports the sample deviation; with n divisible by the splits
    and its permutation applied first, the groups are StyleGAN-V's."""
    InceptionScore = torchmetrics_image("inception").InceptionScore
    logits = torch.from_numpy(np.random.default_rng(3).standard_normal((120, 30)) * 3)
    metric = InceptionScore(feature=torch.nn.Identity(), splits=4)
    metric.update(logits)
    torch.manual_seed(0)
    mean, std = (float(v) for v in metric.compute())
    torch.manual_seed(0)
    order = torch.randperm(120).numpy()
    ours_mean, ours_std = inception_score(logits.numpy()[order], splits=4)
    assert abs(ours_mean - mean) <= 1e-4 * mean
    assert abs(ours_std - std * np.sqrt(3 / 4)) <= 1e-4 * std  # population against sample deviation, 4 groups
    # bounds of the definition: one class everywhere scores 1; n distinct certain classes score n
    assert inception_score(np.zeros((8, 5)), splits=1)[0] == pytest.approx(1.0)
    assert inception_score(np.eye(6) * 60.0, splits=1)[0] == pytest.approx(6.0, rel=1e-6)
    with pytest.raises(ValueError, match="n >= splits >= 1"):
        inception_score(np.zeros((3, 5)), splits=4)


class _Processor:
    """A CLIP processor for torchmetrics' update that passes our items' indices through."""

    def __call__(self, images=None, text=None, **kw):
        if images is not None:
            return {"pixel_values": torch.stack(images)}
        ids = torch.tensor([[int(t)] for t in text])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class _Model(torch.nn.Module):
    """A CLIP model whose "images" and "texts" are indices into fixed embeddings."""

    def __init__(self, embeddings):
        super().__init__()
        self.e = torch.from_numpy(embeddings)
        self.config = object()

    def get_image_features(self, pixel_values):
        return self.e[pixel_values.reshape(len(pixel_values), -1)[:, 0].long()]

    def get_text_features(self, input_ids, attention_mask):
        return self.e[input_ids[:, 0]]


def test_clip_scores_equal_torchmetrics_clip_score_on_the_same_embeddings():
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    g = np.random.default_rng(4)
    image, text = g.standard_normal(32), g.standard_normal(32)
    frames = image + 0.8 * g.standard_normal((9, 32))  # frames near the conditioning image
    emb = np.concatenate([frames, image[None], text[None]])
    model, proc = _Model(emb), _Processor()
    item = lambda i: torch.full((3, 2, 2), float(i))  # noqa: E731

    def theirs(source, target):
        score, _ = _clip_score_update(source, target, model, proc)
        return max(float(score.mean()), 0.0)
    assert clip_image_score(frames, image) == pytest.approx(theirs([item(i) for i in range(9)], [item(9)] * 9),
                                                            abs=1e-5)
    assert frame_consistency(frames) == pytest.approx(theirs([item(i) for i in range(1, 9)],
                                                             [item(i) for i in range(8)]), abs=1e-5)
    assert clip_text_score(frames, text) == pytest.approx(theirs([item(i) for i in range(9)], ["10"] * 9), abs=1e-5)
    assert clip_image_score(frames, image) > 30 and clip_image_score(-frames, image) == 0.0  # clamped at 0
    with pytest.raises(ValueError, match="at least 2 frames, got 1"):
        frame_consistency(frames[:1])


# ------------------------------------------------------------------------------------------------ networks
def _randomise_conv_net_(net, seed: int, fc_std: float = 0.1):
    """Random weights for a convolutional network under test: He-normal convolutions (each layer keeps its
    input's scale, so inputs stay apart to the output), batch norms with random statistics and affine (none is
    an identity), other parameters N(0, 0.1²) (``fc.weight``: N(0, fc_std²))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=g))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
        for name, p in net.named_parameters():
            if p.ndim >= 4:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
            elif name.endswith("bn.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_((fc_std if name == "fc.weight" else 0.1) * torch.randn(p.shape, generator=g))
    return net


def _random_i3d(seed=0):
    """cd-fvd's I3D with random weights and batch-norm statistics."""
    from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d
    return _randomise_conv_net_(InceptionI3d(400, in_channels=3).eval(), seed)


def test_i3d_converts_by_name_and_equals_cd_fvd_end_to_end_through_fvd(tmp_path):
    """cd-fvd's I3D (random weights) saved as the .pt file it loads, converted with the name table, gives the
    same logits (≤ 1e-4 relative) from the same preprocessed clips, and the same FVD as cd-fvd's own Fréchet
    distance on its features (≤ 1e-3)."""
    from cdfvd.third_party.i3d.utils import frechet_distance as cdfvd_frechet, preprocess_i3d
    from exvideo_ms.convert.converter import ConversionError
    from exvideo_ms.convert.network_file import convert_network_file
    from exvideo_ms.metrics.fvd import fvd_from_features, i3d_features, sample_clip
    from exvideo_ms.metrics.networks import MissingWeights, NETWORKS, load_network
    from exvideo_ms.models.i3d import preprocess
    net = _random_i3d()
    torch.save(net.state_dict(), tmp_path / "i3d_pretrained_400.pt")
    spec = NETWORKS["i3d"]
    shapes = network_shapes(spec.build(backend.choices(), {}))
    with pytest.raises(MissingWeights, match="i3d_pretrained_400.pt .*convert_metric_network.py --network i3d"):
        load_network("i3d", tmp_path / "i3d.ckpt")
    n = convert_network_file(tmp_path / "i3d_pretrained_400.pt", tmp_path / "i3d.ckpt", shapes, spec.rename, "i3d",
                             allow_pickle=True, progress=False)
    assert n == len(net.state_dict()) - sum(k.endswith("num_batches_tracked") for k in net.state_dict())
    ours = load_network("i3d", tmp_path / "i3d.ckpt")
    # a file of another network is refused by name, before anything is written
    torch.save({k.replace("Mixed_5c", "Mixed_5d"): v for k, v in net.state_dict().items()}, tmp_path / "other.pt")
    with pytest.raises(ConversionError, match=r"(?s)missing \(30\): Mixed_5c\..*unexpected \(30\): Mixed_5d\."):
        convert_network_file(tmp_path / "other.pt", tmp_path / "other.ckpt", shapes, spec.rename, "i3d",
                             allow_pickle=True, progress=False)
    assert not (tmp_path / "other.ckpt").exists()
    from svd_tools.convert_metric_network import main as convert_cli
    before = (tmp_path / "i3d.ckpt").read_bytes()
    assert convert_cli(["--network", "i3d", "--source", str(tmp_path / "i3d_pretrained_400.pt"), "--output",
                        str(tmp_path / "i3d.ckpt"), "--allow-pickle", "--quiet"]) == 2  # exists: not replaced
    assert convert_cli(["--network", "i3d", "--source", str(tmp_path / "i3d_pretrained_400.pt"), "--output",
                        str(tmp_path / "again.ckpt"), "--quiet"]) == 2  # a pickle needs --allow-pickle
    assert (tmp_path / "i3d.ckpt").read_bytes() == before and not (tmp_path / "again.ckpt").exists()
    assert convert_cli(["--network", "i3d", "--source", str(tmp_path / "i3d_pretrained_400.pt"), "--output",
                        str(tmp_path / "cli.ckpt"), "--allow-pickle", "--quiet"]) == 0
    assert (tmp_path / "cli.ckpt").read_bytes() == before

    g = np.random.default_rng(0)
    real = g.integers(0, 256, (3, 20, 40, 56, 3), np.uint8)  # smooth-ish videos of another size and length
    fake = np.clip(real.astype(int) + g.integers(-60, 60, real.shape), 0, 255).astype(np.uint8)
    clips_real = [sample_clip(v) for v in real]
    clips_fake = [sample_clip(v, start=1, every=1) for v in fake]
    with pytest.raises(ValueError, match="needs 40 frames; the video has 20"):
        sample_clip(real[0], every=2, start=9)
    # preprocessing: cd-fvd's resize to 224² and scaling
    theirs_in = preprocess_i3d(np.stack(clips_real)).numpy()
    np.testing.assert_allclose(preprocess(np.stack(clips_real)), theirs_in, atol=2e-5)

    with torch.no_grad():
        t_real = net(preprocess_i3d(np.stack(clips_real))).double()
        t_fake = net(preprocess_i3d(np.stack(clips_fake))).double()
    f_real = i3d_features(ours, clips_real, batch_size=2, progress=False)
    f_fake = i3d_features(ours, clips_fake, batch_size=2, progress=False)
    for a, b in ((f_real, t_real.numpy()), (f_fake, t_fake.numpy())):
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max(), np.abs(a - b).max() / np.abs(b).max()
    theirs, ours_fvd = float(cdfvd_frechet(t_fake, t_real)), fvd_from_features(f_fake, f_real)
    # measured: logits 5e-7 relative, FVD 13.87444 against 13.87447
    assert theirs > 1.0 and abs(ours_fvd - theirs) <= 1e-3 * theirs, (ours_fvd, theirs)


def _random_inception(tmp_path, seed=0):
    """torchmetrics' InceptionV3 (torch-fidelity's network) with random weights and batch-norm statistics."""
    class Unloaded(torchmetrics_image("fid").NoTrainInceptionV3):  # constructed without the downloaded weights
        def load_state_dict(self, state, strict=True, assign=False):
            return None if state is None else super().load_state_dict(state, strict)

    torch.save(None, tmp_path / "none.pth")
    net = Unloaded("inception-v3-compat", ["2048", "logits_unbiased"], str(tmp_path / "none.pth"))
    # logits within ±15: distinct class distributions for distinct frames, no underflow in torchmetrics' IS
    return _randomise_conv_net_(net, seed, fc_std=0.03)


def test_inception_v3_converts_by_name_and_gives_torchmetrics_fid_and_inception_score(tmp_path):
    """torchmetrics' InceptionV3 (random weights) converted by name gives the same pool features and unbiased
    logits (≤ 1e-4 relative) with either resize, and FID / Inception Score equal to torchmetrics' metrics run
    end to end on the same uint8 frames with that network (FID ≤ 1e-3, IS ≤ 1e-4)."""
    FrechetInceptionDistance = torchmetrics_image("fid").FrechetInceptionDistance
    InceptionScore = torchmetrics_image("inception").InceptionScore
    from exvideo_ms.convert.network_file import convert_network_file
    from exvideo_ms.metrics.fid import fid_from_features, inception_outputs
    from exvideo_ms.metrics.networks import NETWORKS, load_network
    net = _random_inception(tmp_path)
    torch.save(net.state_dict(), tmp_path / "weights-inception-2015-12-05-6726825d.pth")
    spec = NETWORKS["inception"]
    convert_network_file(tmp_path / "weights-inception-2015-12-05-6726825d.pth", tmp_path / "inception.ckpt",
                         network_shapes(spec.build(backend.choices(), {})), spec.rename, "inception", allow_pickle=True,
                         progress=False)
    ours = load_network("inception", tmp_path / "inception.ckpt")

    g = np.random.default_rng(1)
    # frames smaller than 299² of distinct colours (a random network tells colours apart, not noise patterns)
    real = np.clip(g.integers(0, 256, (6, 1, 1, 3)) + g.integers(-40, 40, (6, 48, 80, 3)), 0, 255).astype(np.uint8)
    fake = np.clip(real.astype(int) + g.integers(-60, 60, (6, 1, 1, 3)), 0, 255).astype(np.uint8)
    big = g.integers(0, 256, (2, 420, 330, 3), np.uint8)
    to_torch = lambda f: torch.from_numpy(f).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    for resize, frames in (("antialias", fake), ("antialias", big), ("tf1", big)):
        with torch.no_grad():
            net.use_antialias = resize == "antialias"
            pool_t, logits_t = (t.double().numpy() for t in net._torch_fidelity_forward(to_torch(frames)))
        pool, logits = inception_outputs(ours, frames, resize, batch_size=4, progress=False)
        for a, b in ((pool, pool_t), (logits, logits_t)):
            assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max(), (resize, np.abs(a - b).max() / np.abs(b).max())

    net.use_antialias = True
    pool_real, _ = inception_outputs(ours, real, progress=False)
    pool_fake, logits_fake = inception_outputs(ours, fake, progress=False)
    net.features_list = ["2048"]
    metric = FrechetInceptionDistance(feature=net)
    metric.update(to_torch(real), real=True)
    metric.update(to_torch(fake), real=False)
    theirs = float(metric.compute())
    # measured: 100.549 against torchmetrics' 100.548 (1e-5); features 3e-7 to 9e-7 relative; IS 1.08224 both
    assert theirs > 1.0 and abs(fid_from_features(pool_fake, pool_real) - theirs) <= 1e-3 * theirs
    net.features_list = ["logits_unbiased"]
    metric = InceptionScore(feature=net, splits=2)
    metric.update(to_torch(fake))
    torch.manual_seed(0)
    mean, std = (float(v) for v in metric.compute())
    torch.manual_seed(0)
    order = torch.randperm(len(fake)).numpy()
    ours_mean, ours_std = inception_score(logits_fake[order], splits=2)
    assert mean > 1.05 and abs(ours_mean - mean) <= 1e-4 * mean
    assert abs(ours_std - std * np.sqrt(1 / 2)) <= 1e-4 * std  # population against sample deviation, 2 groups


# ------------------------------------------------------------------------------------------ svd_tools/evaluate
@pytest.mark.slow
def test_evaluate_scores_video_folders_like_the_references_and_names_missing_weights(tmp_path, converted, capsys):
    """svd_tools/evaluate.py on folders of mp4s (one run also as a GIF, counted once): its FVD and FID equal
    cd-fvd's and torchmetrics' computed with the PyTorch networks on the same decoded frames; CLIP-I uses the
    sidecar's image when there is one, CLIP-T the prompt. Without networks it names the files each score needs; bad input stops
    it before any network runs, and an existing output is never replaced."""
    import json
    from cdfvd.third_party.i3d.utils import frechet_distance as cdfvd_frechet, preprocess_i3d
    from PIL import Image
    from exvideo_ms.convert.network_file import convert_network_file
    from exvideo_ms.media import write_gif, write_mp4
    from exvideo_ms.metrics.networks import NETWORKS
    from svd_tools.evaluate import main, read_frames
    from exvideo_ms.convert.sources import open_file
    from exvideo_ms.metrics.networks import source_shapes
    from tests.references import open_clip_tokenizer, open_clip_transformer
    i3d, inception = _random_i3d(), _random_inception(tmp_path)
    torch.manual_seed(0)
    text = open_clip_transformer().TextTransformer(width=128, heads=2, layers=2, output_dim=32)  # tiny SVD's CLIP dim
    for name, net in (("i3d", i3d), ("inception", inception), ("clip_text", text)):
        torch.save(net.state_dict(), tmp_path / f"{name}.pt")
        spec = NETWORKS[name]
        shapes = source_shapes(name, open_file(tmp_path / f"{name}.pt", allow_pickle=True))
        convert_network_file(tmp_path / f"{name}.pt", tmp_path / f"{name}.ckpt", network_shapes(spec.build(
            backend.choices(), shapes)), spec.rename, name, allow_pickle=True, progress=False)
    g = np.random.default_rng(7)
    folders = {}
    for kind in ("generated", "reference"):
        folders[kind] = tmp_path / kind
        folders[kind].mkdir()
        for i in range(2):
            colour = g.integers(0, 256, (1, 1, 1, 3))
            video = np.clip(colour + g.integers(-50, 50, (16, 32, 48, 3)), 0, 255).astype(np.uint8)
            write_mp4(video, folders[kind] / f"run{i}.mp4", 8)
            if kind == "generated" and i == 0:
                write_gif(video, folders[kind] / "run0.gif", 8)
                Image.fromarray(video[3]).save(tmp_path / "input.png")
                (folders[kind] / "run0.json").write_text(json.dumps({"image": str(tmp_path / "input.png")}))
    out = tmp_path / "scores.json"
    args = ["--generated", str(folders["generated"]), "--reference", str(folders["reference"]), "--output", str(out)]
    assert main(args + ["--i3d", str(tmp_path / "i3d.ckpt"), "--inception", str(tmp_path / "inception.ckpt"),
                        "--clip_config", str(converted[1]), "--clip_checkpoint", str(converted[0]),
                        "--clip_text", str(tmp_path / "clip_text.ckpt"), "--clip_vocab", open_clip_tokenizer().default_bpe(),
                        "--prompt", "a red circle", "--is_splits", "2", "--batch_size", "16"]) == 0
    result = json.loads(out.read_text())
    scores = result["scores"]
    assert set(scores) == {"FVD", "IS", "IS_std", "FID", "CLIP-I", "frame consistency", "CLIP-T"}
    assert result["skipped"] == {} and 0 <= scores["CLIP-T"] <= 100
    videos = {k: [read_frames(folders[k] / f"run{i}.mp4") for i in range(2)] for k in folders}
    with torch.no_grad():
        logits = {k: i3d(preprocess_i3d(np.stack(v))).double() for k, v in videos.items()}
    theirs = float(cdfvd_frechet(logits["generated"], logits["reference"]))
    assert abs(scores["FVD"] - theirs) <= 1e-3 * theirs
    inception.features_list = ["2048"]
    metric = torchmetrics_image("fid").FrechetInceptionDistance(feature=inception)
    for k, real in (("reference", True), ("generated", False)):
        metric.update(torch.from_numpy(np.concatenate(videos[k])).permute(0, 3, 1, 2).contiguous(), real=real)
    theirs = float(metric.compute())
    assert abs(scores["FID"] - theirs) <= 1e-3 * theirs
    assert scores["IS"] >= 1.0 and 0 < scores["CLIP-I"] <= 100 and 0 < scores["frame consistency"] <= 100
    assert [c["conditioning_image"] for c in result["details"]["CLIP"]] == [str(tmp_path / "input.png"),
                                                                             "first frame"]
    assert [c["prompt"] for c in result["details"]["CLIP"]] == ["a red circle"] * 2
    capsys.readouterr()
    # no networks: each score says which file it needs; an existing output stays as it is
    before = out.read_text()
    assert main(args) == 2 and "already exists" in capsys.readouterr().err and out.read_text() == before
    assert main(args + ["--overwrite"]) == 0
    result = json.loads(out.read_text())
    assert result["scores"] == {}
    assert "i3d_pretrained_400.pt" in result["skipped"]["FVD"]
    assert "weights-inception-2015-12-05-6726825d.pth" in result["skipped"]["FID"]
    assert "open_clip_pytorch_model.bin" in result["skipped"]["CLIP-T"]
    assert "not computed" in capsys.readouterr().out
    # a clip longer than the videos: refused before any network is built
    assert main(args + ["--overwrite", "--i3d", str(tmp_path / "i3d.ckpt"), "--fvd_frames", "17"]) == 2
    assert "has 16 frames; an FVD clip of 17 frames every 1 needs 17" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--inception", str(tmp_path / "inception.ckpt"), "--is_splits", "33"]) == 2
    assert "33 groups need at least as many frames; the generated videos have 32" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- CLIP text tower
PROMPTS = ["A red circle orbits a blue star.", "  two   cats &amp; a dog &lt;3 ", "Ünïcode naïve café — 123 4.5%",
           "it's we'll they'd I'M", "<end_of_text> inside", "word " * 90, "", "ﬁ ligature and emoji 🙂"]


def test_clip_tokenizer_equals_open_clips():
    from exvideo_ms.models.clip_tokenizer import ClipTokenizer
    from tests.references import open_clip_tokenizer
    ref = open_clip_tokenizer()
    theirs = ref.SimpleTokenizer(ref.default_bpe())(PROMPTS).numpy()
    ours = ClipTokenizer(ref.default_bpe())(PROMPTS)
    assert ours.shape == (len(PROMPTS), 77) and np.array_equal(ours, theirs)
    assert ours[5, -1] == 49407 and ours[6, :2].tolist() == [49406, 49407]  # cut prompt ends with <end_of_text>
    with pytest.raises(FileNotFoundError, match="bpe_simple_vocab_16e6.txt.gz"):
        ClipTokenizer("no_vocab.txt.gz")


def test_clip_text_tower_converts_from_an_open_clip_checkpoint_and_equals_encode_text(tmp_path):
    """open_clip's TextTransformer (random weights, causal mask, argmax pooling) saved with an image tower's and
    the logit scale's keys beside it, as in the open_clip checkpoint: the text keys convert by name, the rest
    is knowingly unused, the configuration is read off the shapes, and the embeddings equal encode_text's."""
    from exvideo_ms.convert.network_file import convert_network_file
    from exvideo_ms.convert.sources import open_file
    from exvideo_ms.metrics.networks import NETWORKS, load_network, source_shapes
    from exvideo_ms.models.clip_tokenizer import ClipTokenizer
    from tests.references import open_clip_tokenizer, open_clip_transformer, randomise_
    torch.manual_seed(0)
    text = open_clip_transformer().TextTransformer(width=128, heads=2, layers=2, output_dim=32).eval()
    randomise_(text, 1)
    state = {**text.state_dict(), "visual.conv1.weight": torch.zeros(8, 3, 4, 4), "logit_scale": torch.ones(())}
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")
    spec = NETWORKS["clip_text"]
    source = open_file(tmp_path / "open_clip_pytorch_model.bin", allow_pickle=True)
    shapes = network_shapes(spec.build(backend.choices(), source_shapes("clip_text", source)))
    assert len(shapes) == len(text.state_dict())
    convert_network_file(tmp_path / "open_clip_pytorch_model.bin", tmp_path / "text.ckpt", shapes, spec.rename,
                         "clip_text", allow_pickle=True, progress=False)
    ours = load_network("clip_text", tmp_path / "text.ckpt")
    tokens = ClipTokenizer(open_clip_tokenizer().default_bpe())(PROMPTS)
    with torch.no_grad():
        theirs = text(torch.from_numpy(tokens).long()).double().numpy()
    got = ours(ms.Tensor(tokens)).asnumpy()
    # measured: 8e-7 relative
    assert np.abs(got - theirs).max() <= 1e-4 * np.abs(theirs).max(), np.abs(got - theirs).max() / np.abs(theirs).max()
    # (without the causal mask the padding after <end_of_text> would reach the pooled token: not equal)
