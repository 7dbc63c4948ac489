"""Headless Chromium opens the viewer page: the video plays, typed text is spoken."""

from __future__ import annotations

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import ServerThread, studio_config

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server():
    srv = ServerThread(studio_config([{"name": "nova", "title": "Nova"}])).start()
    yield srv
    srv.stop()


def state(driver) -> dict:  # type: ignore[no-untyped-def]
    return driver.execute_script("return Object.assign({}, window.avatarcast && window.avatarcast.state)")


def sample_mouth(driver, box, ms: int = 2000) -> np.ndarray:  # type: ignore[no-untyped-def]
    samples = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.avatarcast.sampleRegion(arguments[0], arguments[1], 40).then(done);",
        list(box),
        ms,
    )
    return np.array(samples)


def test_page_plays_and_speaks_typed_text(server: ServerThread, chromium) -> None:  # type: ignore[no-untyped-def]
    driver = chromium
    driver.get(f"{server.url}/c/nova")
    wait = WebDriverWait(driver, 30, poll_frequency=0.2)
    wait.until(lambda d: state(d).get("connection") == "connected")
    wait.until(lambda d: (state(d).get("videoWidth") or 0) > 0 and state(d).get("currentTime", 0) > 1.0)
    t0 = state(driver)["currentTime"]
    wait.until(lambda d: state(d)["currentTime"] > t0 + 1.0)  # the video keeps advancing
    s = state(driver)
    assert s["videoWidth"] == 512 and s["videoCodec"] == "video/H264", s
    assert driver.find_element(By.ID, "title").text == "Nova"

    box = server.studio.channels["nova"].face.mouth_box
    idle_mouth = sample_mouth(driver, box)
    energy_before = state(driver)["heardEnergy"]

    field = driver.find_element(By.ID, "chat-text")
    field.send_keys("Hello from the browser! I can type and you will say it.")
    driver.find_element(By.ID, "chat-send").click()

    wait.until(lambda d: "Hello from the browser!" in (state(d).get("captions") or []))
    speaking_mouth = sample_mouth(driver, box)
    wait.until(lambda d: state(d)["heardEnergy"] > energy_before + 0.01)
    assert driver.find_element(By.ID, "chat-text").get_attribute("value") == ""
    assert driver.find_element(By.ID, "chat-error").text == ""
    idle_motion = np.abs(np.diff(idle_mouth)).mean()
    speech_motion = np.abs(np.diff(speaking_mouth)).mean()
    assert speech_motion > 3 * idle_motion + 0.2, (idle_motion, speech_motion)


def test_page_shows_why_a_message_was_refused(server: ServerThread, chromium) -> None:  # type: ignore[no-untyped-def]
    driver = chromium
    driver.get(f"{server.url}/c/nova")
    wait = WebDriverWait(driver, 30, poll_frequency=0.2)
    wait.until(lambda d: state(d).get("connection") == "connected")
    driver.find_element(By.ID, "chat-text").send_keys("x" * 400)  # over max_chat_chars (300)
    driver.execute_script("document.getElementById('chat-text').removeAttribute('maxlength')")
    driver.execute_script("document.getElementById('chat-text').value = 'y'.repeat(400)")
    driver.find_element(By.ID, "chat-send").click()
    wait.until(lambda d: "at most 300" in d.find_element(By.ID, "chat-error").text)


def test_mic_button_sends_the_viewers_voice(server: ServerThread, chromium) -> None:  # type: ignore[no-untyped-def]
    """The mic joins the running call (no renegotiation); the channel receives its audio."""
    driver = chromium
    driver.get(f"{server.url}/c/nova")
    wait = WebDriverWait(driver, 30, poll_frequency=0.2)
    wait.until(lambda d: state(d).get("connection") == "connected")
    viewers = server.studio.channels["nova"].media.webrtc.viewers
    viewer = viewers[state(driver)["viewer"]]
    assert viewer.mic_frames == 0, "no mic audio before the button is pressed"
    mic = driver.find_element(By.ID, "mic")
    mic.click()
    wait.until(lambda d: d.find_element(By.ID, "mic").get_attribute("aria-pressed") == "true")
    wait.until(lambda d: viewer.mic_frames > 50)  # 20 ms frames from Chromium's fake microphone
    mic.click()
    wait.until(lambda d: d.find_element(By.ID, "mic").get_attribute("aria-pressed") == "false")


@pytest.fixture()
def voice_server():
    from models.defaults import PROJECT_ROOT

    knowledge = PROJECT_ROOT / "configs" / "knowledge"
    channel = {
        "name": "shop",
        "persona": {"knowledge": str(knowledge / "shop.txt"), "answers": str(knowledge / "faq.yaml")},
        "conversation": {"chat": "ask"},
    }
    srv = ServerThread(studio_config([channel])).start()
    yield srv
    srv.stop()


def test_a_spoken_question_is_transcribed_and_answered(voice_server: ServerThread, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Chromium's microphone plays an espeak-ng question; the page shows the transcript and the
    avatar answers: audio energy rises and the mouth moves at the page."""
    from tests.conftest import chromium_driver, espeak, write_wav

    wav = write_wav(tmp_path / "question.wav", espeak("How much do the running shoes cost?", pad_s=0.5), 48_000)
    # Chromium loops the file: a long silence after the question gives the avatar time to answer
    silence = np.zeros(48_000 * 12, np.int16)
    import wave

    with wave.open(str(wav)) as w:
        speech = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    write_wav(wav, np.concatenate([speech, silence]), 48_000)
    with chromium_driver([f"--use-file-for-fake-audio-capture={wav}"]) as driver:
        driver.get(f"{voice_server.url}/c/shop")
        wait = WebDriverWait(driver, 40, poll_frequency=0.2)
        wait.until(lambda d: state(d).get("connection") == "connected")
        energy_before = state(driver)["heardEnergy"]
        driver.find_element(By.ID, "mic").click()
        wait.until(lambda d: "shoes" in (state(d).get("transcript") or "").lower())
        transcript = state(driver)["transcript"].lower()
        box = voice_server.studio.channels["shop"].face.mouth_box
        wait.until(lambda d: any("49 dollars" in c for c in state(d).get("captions") or []))
        speaking_mouth = sample_mouth(driver, box, 1500)
        driver.find_element(By.ID, "mic").click()
        wait.until(lambda d: state(d)["heardEnergy"] > energy_before + 0.01)
    assert "cost" in transcript, transcript
    assert np.abs(np.diff(speaking_mouth)).mean() > 0.3, "the mouth moves while answering"
