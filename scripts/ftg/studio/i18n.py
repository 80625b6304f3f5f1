"""Studio's words in English and Russian: one table, one key per phrase (tests check both have every key)."""

from __future__ import annotations

LANGUAGES = ("en", "ru")

TEXT = {
    "title": ("FineTune Gemma Studio", "FineTune Gemma Studio"),
    "intro": ("From your chat export to a GGUF that sounds like you, in five steps. Every step runs the same script "
              "as its launcher and shows the files it wrote.",
              "От выгрузки чатов до GGUF, который пишет как вы, за пять шагов. Каждый шаг запускает тот же скрипт, "
              "что и его лаунчер, и показывает, какие файлы он записал."),
    "step1": ("1. Model", "1. Модель"), "step2": ("2. Data", "2. Данные"), "step3": ("3. Train", "3. Обучение"),
    "step4": ("4. Export", "4. Экспорт"), "step5": ("5. Talk", "5. Разговор"),
    "selected": ("Selected base model", "Выбранная базовая модель"),
    "none_selected": ("No base model yet.", "Базовая модель ещё не выбрана."),
    "vram": ("GPU memory on this computer", "Память видеокарты на этом компьютере"),
    "no_gpu": ("no NVIDIA GPU found: the small models train on the CPU, slowly",
               "видеокарта NVIDIA не найдена: маленькие модели учатся на процессоре, медленно"),
    "plan": ("Training it here, as ftg/device_plan predicts with config.yaml's settings: {method}, micro-batch "
             "{micro_batch} x {max_seq_len} tokens, peak {predicted_gib} GiB of {memory_gib} GiB ({device}).",
             "Обучение этой модели здесь, по прогнозу ftg/device_plan с настройками config.yaml: {method}, "
             "микро-батч {micro_batch} x {max_seq_len} токенов, пик {predicted_gib} ГиБ из {memory_gib} ГиБ "
             "({device})."),
    "plan_too_big": ("It may not fit: lower train.max_seq_len in config.yaml or choose a smaller model.",
                     "Может не поместиться: уменьшите train.max_seq_len в config.yaml или выберите модель поменьше."),
    "needs": ("needs about", "нужно около"), "fits": ("fits", "помещается"), "too_big": ("too big", "не поместится"),
    "gated": ("licence click on Hugging Face", "нужно принять лицензию на Hugging Face"),
    "token": ("Hugging Face token (only for gated models; it is passed to the download and never stored or shown)",
              "Токен Hugging Face (только для моделей с лицензией; передаётся загрузке, не сохраняется и не показывается)"),
    "download": ("Download", "Скачать"), "demo": ("Use the offline demo model (Gemma 3 270M)",
                                                   "Взять офлайн-демомодель (Gemma 3 270M)"),
    "upload": ("Upload a chat export (a file or a .zip)", "Загрузите выгрузку чатов (файл или .zip)"),
    "send_file": ("Upload", "Загрузить"),
    "or_folder": ("…or use a folder on this computer", "…или папку на этом компьютере"),
    "prepare": ("Read the chats", "Прочитать чаты"), "formats": ("Formats found", "Найденные форматы"),
    "accounting": ("{read} messages read, {used} used, {skipped} skipped; {train} training and {eval} held-out "
                   "examples.", "Прочитано сообщений: {read}, использовано {used}, пропущено {skipped}; примеров: "
                   "{train} для обучения и {eval} для проверки."),
    "who": ("Who are you? Tick your own name(s): the model learns their voice.",
            "Кто из них вы? Отметьте своё имя (или имена): модель учится их голосу."),
    "name": ("Name", "Имя"), "messages": ("Messages", "Сообщений"), "you": ("You", "Вы"),
    "use_me": ("This is me: read again", "Это я: прочитать заново"),
    "pairs": ("Sample pairs (what the model will learn to answer). Not your voice? Fix the ticks above.",
              "Примеры пар (что модель научится отвечать). Не ваш голос? Исправьте отметки выше."),
    "them": ("them", "собеседник"), "you_said": ("you", "вы"),
    "no_data": ("No data yet.", "Данных пока нет."),
    "max_steps": ("Steps (0: whole epochs)", "Шагов (0 — целые эпохи)"),
    "learning_rate": ("Learning rate", "Скорость обучения"), "eval_every": ("Check every N steps",
                                                                            "Проверка каждые N шагов"),
    "start": ("Start training", "Начать обучение"), "resume": ("Resume", "Продолжить"),
    "stop": ("Stop (saves a checkpoint)", "Остановить (с сохранением)"),
    "resume_offer": ("Run {run} stopped before it finished. Resume it from its last checkpoint?",
                     "Запуск {run} остановился, не закончив. Продолжить с последней контрольной точки?"),
    "run": ("Run", "Запуск"), "step": ("Step", "Шаг"), "tokens_s": ("tokens/s", "токенов/с"), "eta": ("ETA", "Осталось"),
    "best": ("Best eval loss", "Лучшая ошибка на проверке"), "status": ("Status", "Состояние"),
    "loss": ("train loss", "ошибка (обучение)"), "eval_loss": ("eval loss", "ошибка (проверка)"),
    "sample_replies": ("Sample replies at step {step} (0: the base model)",
                       "Примеры ответов на шаге {step} (0 — базовая модель)"),
    "no_run": ("No training run yet.", "Обучения ещё не было."),
    "export": ("Merge and convert to GGUF", "Объединить и сделать GGUF"),
    "quant": ("Quantization", "Квантование"),
    "auto_quant": ("auto: the smallest that keeps your style", "авто: самое маленькое, что сохраняет ваш стиль"),
    "ladder": ("Which quant keeps your style (measured on your replies)",
               "Какое квантование сохраняет ваш стиль (измерено на ваших ответах)"),
    "reply_top1": ("Reply tokens as the merged model", "Токены ответа как у объединённой модели"),
    "style_distance": ("Style distance (0 = yours)", "Стилевое расстояние (0 = ваш)"),
    "marker": ("Your marker", "Ваш маркер"), "kept": ("Keeps the style?", "Сохраняет стиль?"),
    "kept_yes": ("yes", "да"), "kept_no": ("no", "нет"), "kept_baseline": ("reference", "эталон"),
    "checks": ("GGUF checks", "Проверки GGUF"), "file": ("File", "Файл"), "type": ("Type", "Тип"),
    "size": ("MB", "МБ"), "loads": ("Loads", "Загружается"), "agreement": ("Agreement with the merged model",
                                                                        "Совпадение с объединённой моделью"),
    "problems": ("Problems", "Проблемы"), "get_gguf": ("Download the GGUF", "Скачать GGUF"),
    "get_modelfile": ("Download the Modelfile", "Скачать Modelfile"),
    "apps": ("Use it in Ollama or LM Studio", "Как открыть в Ollama или LM Studio"),
    "no_export": ("No GGUF yet.", "GGUF ещё нет."),
    "talk_hint": ("Write a message: the base and the tuned model answer side by side.",
                  "Напишите сообщение: базовая и обученная модели ответят рядом."),
    "send": ("Send", "Отправить"), "base": ("Base model", "Базовая модель"), "tuned": ("Tuned model",
                                                                                        "Обученная модель"),
    "no_base": ("output/base_model.gguf is not there yet: the export's report makes it.",
                "output/base_model.gguf ещё нет: его делает отчёт после экспорта."),
    "report": ("Report", "Отчёт"), "verdict": ("Verdict", "Вывод"), "numbers": ("Numbers", "Цифры"),
    "open_report": ("Open the full report", "Открыть полный отчёт"),
    "busy": ("A stage is already running: {job}. Wait for it or stop it.",
             "Уже идёт шаг: {job}. Дождитесь его или остановите."),
    "running": ("running…", "идёт…"), "done": ("done", "готово"), "failed": ("failed", "ошибка"),
    "stopped": ("stopped", "остановлено"), "lost": ("ended while Studio was closed", "завершился, пока Studio была закрыта"),
    "idle": ("not run yet", "ещё не запускался"), "log": ("Last lines of the log", "Последние строки журнала"),
    "files_at": ("Files", "Файлы"), "error": ("Error", "Ошибка"), "upload_done": ("Saved to", "Сохранено в"),
    "language": ("Русский", "English"),
}
"""key -> (English, Russian)."""


def translate(lang: str, key: str, **values) -> str:
    """The phrase in lang ('en' or 'ru'); an unknown key shows itself, so a missing phrase is visible, not fatal."""
    pair = TEXT.get(key)
    text = pair[LANGUAGES.index(lang) if lang in LANGUAGES else 0] if pair else key
    return text.format(**values) if values else text


def pick_language(query: str | None, cookie: str | None, accept: str | None) -> str:
    """?lang= wins, then the cookie, then the browser's first language; English otherwise."""
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice
    return "ru" if (accept or "").lower().startswith("ru") else "en"
