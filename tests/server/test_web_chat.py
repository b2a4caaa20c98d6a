"""The web chat page in headless Chromium (Debian's chromium + chromium-driver via selenium):
send a message, see the streamed answer and its tokens/s, save a screenshot."""

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from conftest import OUTPUT


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    # The flags keep Chromium from reaching for the network this machine does not have.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1100,800"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def test_web_chat_streams_an_answer(server):
    driver = browser()
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "model").text == server.model)
        driver.find_element(By.TAG_NAME, "summary").click()  # open the settings
        driver.find_element(By.ID, "temperature").clear()
        driver.find_element(By.ID, "temperature").send_keys("0")
        box = driver.find_element(By.ID, "input")
        box.send_keys("Which city is the capital of France? Answer in one word.")
        box.send_keys(Keys.ENTER)
        answer = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid=answer]"))
        wait.until(lambda d: answer.find_elements(By.CLASS_NAME, "meta"))
        meta = answer.find_element(By.CLASS_NAME, "meta").text
        text = answer.text.replace(meta, "").strip()
        OUTPUT.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(OUTPUT / "web-chat.png"))
        print(f"answer: {text!r}; {meta}")
        assert "Paris" in text
        assert "tok/s" in meta and "error" not in answer.get_attribute("class")
        # The conversation is kept: a second turn sends both.
        box.send_keys("And of Italy?")
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant .meta")) == 2)
        assert len(driver.find_elements(By.CSS_SELECTOR, ".msg.user")) == 2
        driver.save_screenshot(str(OUTPUT / "web-chat-2.png"))
    finally:
        driver.quit()
