"""Helpers of the dashboard tests: a worker that trains a small real model over HTTP, and a headless browser."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from lrtune.client.protocol import WireReport, WireSegment
from lrtune.server.demo_train import Digits, SegmentRunner

ROOT = Path(__file__).resolve().parents[2]
#: Screenshots and other artifacts of the browser tests (gitignored).
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: A job that reaches several stages in a few hundred steps of a digits MLP (a second or two of training):
#: the ``greedy`` preset, which searches stage by stage and makes no plan.
JOB_CONFIG: dict[str, Any] = {
    "preset": "greedy",
    "min_lr": 1e-3,
    "max_lr": 1.0,
    "total_steps": 600,
    "warmup_steps": 20,
    "tau": 40,
    "tau_max": 160,
    "k": 4,
    "k_warm": 3,
    "seed": 0,
}

#: A ``plan``-preset job (it plans the whole budget with a loss model); trained on digits with label noise,
#: whose loss floor the model can fit, it has a plan with a predicted loss curve a few hundred steps in.
PLAN_CONFIG: dict[str, Any] = {
    "preset": "plan",
    "min_lr": 1e-3,
    "max_lr": 1.0,
    "total_steps": 800,
    "warmup_steps": 20,
    "seed": 0,
}
PLAN_LABEL_NOISE = 0.3


@dataclass
class Worker:
    """Trains a 64-128-10 MLP on digits segment by segment, against a service over HTTP.

    Args:
        url: Base URL of the service.
        name: Job name.
        config: Job config.
    """

    url: str
    name: str = "digits-mlp"
    config: dict[str, Any] = field(default_factory=lambda: dict(JOB_CONFIG))
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=60.0)
        created = self.http.post("/v1/jobs", json={"name": self.name, "config": self.config})
        assert created.status_code == 201, created.text
        self.job_id: str = created.json()["job_id"]
        self.token: str = created.json()["token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        self.runner = SegmentRunner(noisy_digits(self.label_noise), 0)
        resp = self.http.post(f"/v1/jobs/{self.job_id}/lease", json={"worker_id": "w1"})
        assert resp.status_code == 200, resp.text
        self.segment = WireSegment.from_dict(resp.json())

    @property
    def done(self) -> bool:
        return self.segment.done

    def step(self) -> WireSegment:
        """Train the open segment and report it; return the segment that ran."""
        seg = self.segment
        losses, vals = self.runner.run(seg)
        body = WireReport(worker_id="w1", lease_epoch=seg.lease_epoch, losses=losses, val_losses=vals)
        resp = self.http.post(f"/v1/jobs/{self.job_id}/segments/{seg.segment_id}/report", json=body.model_dump())
        assert resp.status_code == 200, resp.text
        self.segment = WireSegment.from_dict(resp.json())
        return seg

    def run(self, until_step: int | None = None) -> None:
        """Run segments until the job is done, or until ``until_step`` steps are used."""
        while not self.done and (until_step is None or self.segment.start_step < until_step):
            self.step()

    def close(self) -> None:
        self.http.close()


def noisy_digits(share: float, seed: int = 0) -> Digits:
    """Digits with ``share`` of the training labels replaced by random ones (validation labels stay clean).

    Label noise gives the training loss a floor well above zero, as in real training, instead of the few
    hundred steps this MLP needs to memorize the clean training set.
    """
    import torch

    data = Digits.load(seed)
    if share <= 0:
        return data
    gen = torch.Generator().manual_seed(seed + 1)
    y = data.y_train.clone()
    flip = torch.rand(len(y), generator=gen) < share
    y[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=gen)
    return Digits(data.x_train, y, data.x_val, data.y_val)


def chromium_or_skip() -> None:
    """Skip (fail in CI) when Chromium or its driver is missing (``./dev test`` installs both)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) or shutil.which(Path(p).name))]
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def make_browser(download_dir: Path, width: int = 1400, height: int = 1000) -> Any:
    """A headless Chromium driven by Selenium, with a fresh profile, saving downloads to ``download_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM if os.path.exists(CHROMIUM) else str(shutil.which("chromium"))
    profile = tempfile.mkdtemp(prefix="lrtune-chromium-")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": str(download_dir), "download.prompt_for_download": False},
    )
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else str(shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.profile_dir = profile
    return driver


def close_browser(driver: Any) -> None:
    profile = getattr(driver, "profile_dir", None)
    driver.quit()
    if profile:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str, full_page: bool = True) -> Path:
    """Save a screenshot under ``test-artifacts/dashboard/`` (the whole page when ``full_page``)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if full_page:
        size = driver.get_window_size()
        fit_page(driver)
        driver.save_screenshot(str(path))
        driver.set_window_size(size["width"], size["height"])
    else:
        driver.save_screenshot(str(path))
    return path


def fit_page(driver: Any) -> None:
    """Make the window tall enough that the viewport shows the whole page (for full-page screenshots)."""
    size = driver.get_window_size()
    page, view = driver.execute_script("return [document.documentElement.scrollHeight, window.innerHeight]")
    if page > view:
        driver.set_window_size(size["width"], size["height"] + page - view)


def severe_console_errors(driver: Any) -> list[str]:
    """Messages the page logged at level SEVERE (uncaught errors, failed loads)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
