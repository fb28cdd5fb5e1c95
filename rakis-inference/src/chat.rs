//! Chat templates rendered with minijinja (the Jinja dialect of Hugging Face templates).

use minijinja::{context, Environment, ErrorKind};
use rakis_core::{ChatMessage, Role};

use crate::InferenceError;

/// ChatML, used when a model ships no template (SmolLM2, Qwen and many others use it).
pub const CHATML_FALLBACK: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// Whether the template came from the model (false: the ChatML fallback).
    pub from_model: bool,
}

impl ChatTemplate {
    /// Compiles `source` (the model's template) or, when `None`, the ChatML fallback.
    pub fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<Self, InferenceError> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        let from_model = source.is_some();
        env.add_template_owned("chat", source.unwrap_or(CHATML_FALLBACK).to_string())
            .map_err(InferenceError::Template)?;
        Ok(ChatTemplate {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
            from_model,
        })
    }

    /// Renders the conversation followed by the assistant's turn opening.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, InferenceError> {
        let msgs: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                context! { role => role, content => m.content.clone() }
            })
            .collect();
        let t = self
            .env
            .get_template("chat")
            .map_err(InferenceError::Template)?;
        t.render(context! {
            messages => msgs,
            add_generation_prompt => true,
            bos_token => self.bos.clone(),
            eos_token => self.eos.clone(),
        })
        .map_err(InferenceError::Template)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_renders() {
        let t = ChatTemplate::new(None, "", "<|im_end|>").unwrap();
        let s = t
            .render(&[ChatMessage::system("Be brief."), ChatMessage::user("Hi")])
            .unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(!t.from_model);
    }

    #[test]
    fn python_methods_and_exceptions_work() {
        let src = "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('bad') }}{% endif %}{{ bos_token }}{{ messages[0]['content'].strip() | upper }}";
        let t = ChatTemplate::new(Some(src), "<s>", "</s>").unwrap();
        assert_eq!(t.render(&[ChatMessage::user("  hi ")]).unwrap(), "<s>HI");
        let err = t
            .render(&[ChatMessage {
                role: Role::Assistant,
                content: "x".into(),
            }])
            .unwrap_err();
        assert!(err.to_string().contains("bad"));
        assert!(ChatTemplate::new(Some("{% for %}"), "", "").is_err());
    }
}
